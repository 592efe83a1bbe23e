"""`predict --dask [ADDRESS]`: the job's files spread over a Dask cluster, one task per
file, the answers written here in input order (docs/deploy.md).

Each worker process builds one Predictor with the job's settings (the first task it
gets) and keeps it; a task decodes its file, finds and classifies its faces (a video:
every analysed frame, tracked and smoothed) and sends back, per image or frame, the
`FacePrediction`s. A file that fails comes back as its message. At most `window` tasks
are in flight, so the client's memory does not grow with the job. Without an ADDRESS
a local cluster of `workers` processes (one thread each) is started and stopped here.
Needs the optional extra: `pip install -e ".[dask]"`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

from ferjax.errors import FerjaxError

_PREDICTORS: dict = {}


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a worker needs to build the job's Predictor and read its videos."""
  workdir: str | None
  weights: str | None
  backend: str
  tta: bool
  detect_size: int
  min_confidence: float | None
  detect: bool | None
  every: int | None
  fps: float | None
  smooth: float


def _predictor(s: Settings):
  key = dataclasses.astuple(s)
  if key not in _PREDICTORS:
    from ferjax.predictor import Predictor
    _PREDICTORS[key] = Predictor.load(workdir=s.workdir, weights=s.weights,
                                      backend=s.backend, tta=s.tta,
                                      detect_size=s.detect_size,
                                      min_confidence=s.min_confidence)
  return _PREDICTORS[key]


def predict_file(path: str, s: Settings) -> tuple[str, list | None, str | None]:
  """In a worker: (path, [(frame, time, faces)] or None, error or None)."""
  from ferjax import images as images_lib
  from ferjax import predict
  predictor = _predictor(s)
  try:
    if Path(path).suffix.lower() in predict.VIDEO_SUFFIXES:
      out = [(i, t, faces) for i, t, _, _, faces, _ in predict.tracked_frames(
          Path(path), predictor, detect=s.detect, every=s.every, fps=s.fps,
          smooth=s.smooth)]
      if not out:
        raise FerjaxError("the video has no frames")
      return path, out, None
    image = images_lib.open_image(path)
    crops, meta = predictor.crops(image, detect=s.detect)
    (faces,) = predictor.classify_crops([crops], [meta])
    return path, [(None, None, faces)], None
  except FerjaxError as e:
    return path, None, str(e)


def client_for(address: str | None, workers: int):
  """(dask.distributed Client, the local cluster started for it or None): of the
  cluster at `address`, or of a local cluster of `workers` processes. Messages for a
  missing extra or an unreachable address."""
  try:
    from dask.distributed import Client, LocalCluster
  except ImportError:
    raise FerjaxError("--dask needs Dask: pip install -e \".[dask]\"") from None
  if address:
    try:
      return Client(address, timeout="10s"), None
    except (OSError, TimeoutError) as e:
      raise FerjaxError(f"--dask: no Dask scheduler answers at '{address}' ({e}); start "
                        "one (`dask scheduler`) or leave out the address for a local "
                        "cluster") from None
  cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         dashboard_address=None)
  return Client(cluster), cluster


def run(paths: list[Path], settings: Settings, client, *, window: int):
  """(path, [(frame, time, faces)] or None, error or None) per file, in input order."""
  futures: deque = deque()
  pending = iter(paths)
  for path in pending:
    futures.append(client.submit(predict_file, str(path), settings, pure=False))
    if len(futures) >= window:
      break
  while futures:
    path, groups, error = futures.popleft().result()
    nxt = next(pending, None)
    if nxt is not None:
      futures.append(client.submit(predict_file, str(nxt), settings, pure=False))
    yield path, groups, error
