"""The emotion of every face in your photos, folders and videos.

    python -m ferjax.predict photo.jpg [more.png folder/ clip.mp4 ...]
        [--workdir DIR | --weights FILE] [--json | --csv] [--annotate OUT_DIR]
        [--no-detect] [--tta] [--every N | --fps F] [--out DIR] [--backend onnx|jax]

Faces are found with a face detector, framed and aligned like FER2013's crops, and
classified by the model that ships with ferjax (or a run's, with --workdir, or an
exported one, with --weights). A folder is searched recursively for images and videos.
A small image (at most 96 pixels a side) or --no-detect is classified whole.

Output: a table on a terminal; --json prints one JSON object per face (file, frame and
time for videos, box, label, score, probabilities, uncertain, flags), --csv one row per
face. `uncertain` marks a face whose calibrated top probability is below the model's
threshold (the table prints 'fear? 0.27'); `flags` say why a face may be hard to read
(small, blurred, dark, overexposed, low_contrast, turned; ferjax/quality.py). An input
that fails (not an image, truncated, no face found) gets its own message on stderr and
the others go on.

--out DIR writes the results as the job goes instead of printing them (results.jsonl,
one record per face; files.jsonl, one per finished file, failures with their error);
the same command after an interruption skips what is finished and ends with the same
results as an uninterrupted run (ferjax/results.py).

--annotate never writes over a file: where a name is taken (by an input, say), the
copy gets the next free one (photo-2.png, ...).

Exit status: 0 when every input was processed, 3 when some were and others failed
(each failure has its message on stderr; stdout stays a clean table, JSON or CSV),
1 when none could be, 2 for a usage error (bad option, model that cannot be loaded).
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ferjax.errors import FerjaxError, describe_os_error, require_extra, run_cli
from ferjax.predictor import add_backend_flag

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
                  ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
# Images whose faces are classified together in one call.
GROUP = 16
# Exit statuses (the module docstring says what each means).
EXIT_ALL_DONE, EXIT_NONE_DONE, EXIT_USAGE, EXIT_SOME_FAILED = 0, 1, 2, 3
# The longest file name most file systems take, in bytes.
NAME_MAX = 255


def _fit_name(stem: str, tail: str) -> str:
  """`stem + tail`, the stem shortened (whole characters) to fit NAME_MAX bytes."""
  room = NAME_MAX - len(tail.encode())
  raw = stem.encode()[:max(room, 1)]
  return raw.decode(errors="ignore") + tail


def reserve_output(folder: Path, stem: str, suffix: str) -> Path:
  """A new, empty file in `folder` named `stem + suffix`, or `stem-2 + suffix`, ...
  where that is taken: created exclusively, so no existing file is ever replaced."""
  for k in range(1, 10_000):
    path = folder / _fit_name(stem, (f"-{k}" if k > 1 else "") + suffix)
    try:
      with open(path, "xb"):
        return path
    except FileExistsError:
      continue
  raise FerjaxError(f"no free name for '{stem}{suffix}' in '{folder}'")


def _why_not_there(p: Path) -> str:
  """Why `p` is neither a file nor a folder that can be read, in words."""
  try:
    os.stat(p)
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "a symbolic link that loops back on itself"
    if e.errno in (errno.EACCES, errno.EPERM):
      return "permission denied (a folder on its path cannot be entered)"
    if e.errno == errno.ENOENT:
      return ("a symbolic link to nothing" if p.is_symlink()
              else "no such file or folder")
    return describe_os_error(e)
  return "neither a file nor a folder"


def expand(paths: list[str]) -> tuple[list[Path], list[str]]:
  """Files to process (folders searched recursively) and a message per bad path."""
  files, errors = [], []
  for p in map(Path, paths):
    if p.is_dir():
      try:
        next(os.scandir(p), None)
      except PermissionError:
        errors.append(f"{p}: permission denied: this folder cannot be listed")
        continue
      found = sorted(f for f in p.rglob("*") if f.is_file()
                     and f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
      if not found:
        errors.append(f"{p}: no images or videos in this folder")
      files += found
    elif p.is_file():
      files.append(p)
    else:
      errors.append(f"{p}: {_why_not_there(p)}")
  return files, errors


def video_frames(path: Path, *, every: int | None, fps: float | None
                 ) -> Iterator[tuple[int, float, np.ndarray, float]]:
  """(frame index, seconds, RGB frame, frames per second kept) of every `every`-th
  frame, or `fps` of them per second."""
  import imageio_ffmpeg
  _no_python_in_forked_child()
  try:
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = reader.__next__()
  except PermissionError:
    raise FerjaxError("permission denied: the file cannot be read") from None
  except (OSError, RuntimeError, StopIteration) as e:
    text = str(e)
    if "meta information" in text or "does not contain any stream" in text:
      raise FerjaxError("the file has no video stream (audio only, empty, or not a "
                        "video)") from None
    raise FerjaxError(f"cannot be read as a video ({text.splitlines()[0]})") from None
  w, h = meta["size"]
  rate = float(meta.get("fps") or 25.0)
  step = every or (max(1, round(rate / fps)) if fps else 1)
  try:
    for i, raw in enumerate(reader):
      if i % step == 0:
        yield i, i / rate, np.frombuffer(raw, np.uint8).reshape(h, w, 3), rate / step
  except RuntimeError as e:
    raise FerjaxError(f"video decoding failed ({str(e).splitlines()[0]})") from None
  finally:
    reader.close()


def _no_python_in_forked_child() -> None:
  """Starts ffmpeg without running Python in the forked child.

  imageio-ffmpeg puts ffmpeg in its own process group (so that Ctrl-C reaches only
  ferjax) with `preexec_fn=os.setpgrp`: Python code between fork and exec, which is
  what JAX's "os.fork() ... will likely lead to a deadlock" warning is about, and
  rightly (another thread may hold a lock the child then needs). Without a preexec_fn,
  CPython forks and execs ffmpeg in C, calls no fork hooks and runs no Python in the
  child. The cost: Ctrl-C also reaches ffmpeg, which ends it, as ferjax ends anyway.
  """
  os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")


def summary_table(rows: list[dict]) -> str:
  """A video's per-track summary as text."""
  lines = [f"  track {r['track']:>3}: {r['seconds']:7.2f} s in view "
           f"({r['first']:.2f}-{r['last']:.2f} s), mostly {r['dominant']} "
           f"({100 * r['shares'][r['dominant']]:.0f}%); "
           + ", ".join(f"{c} {100 * v:.0f}%" for c, v in
                       sorted(r["shares"].items(), key=lambda kv: -kv[1]) if v > 0)
           for r in rows]
  return "\n".join(lines) if lines else "  no face was tracked"


class Output:
  """Prints rows as a table, JSON lines or CSV."""

  FIELDS = ("file", "frame", "time", "face", "track", "box", "label", "score",
            "uncertain", "flags")

  def __init__(self, fmt: str, classes):
    self.fmt, self.classes = fmt, classes
    self._csv = None

  def summary(self, file: Path, rows: list[dict]) -> None:
    """A video's per-track summary: a JSON line, or a table (on stderr under --csv,
    which keeps stdout one CSV table)."""
    if self.fmt == "json":
      print(json.dumps({"file": str(file), "summary": rows}), flush=True)
      return
    print(f"{file}: summary\n{summary_table(rows)}", flush=True,
          file=sys.stderr if self.fmt == "csv" else sys.stdout)

  def write(self, file: Path, faces, *, frame=None, time=None) -> None:
    from ferjax.results import face_rows
    for k, (f, row) in enumerate(zip(faces, face_rows(file, faces, frame=frame,
                                                          time=time))):
      if self.fmt == "json":
        print(json.dumps(row), flush=True)
      elif self.fmt == "csv":
        if self._csv is None:
          self._csv = csv.writer(sys.stdout)
          self._csv.writerow(list(self.FIELDS) + list(self.classes))
        track = row.get("track")
        self._csv.writerow([row.get("file"), row.get("frame", ""), row.get("time", ""),
                            k, "" if track is None else track,
                            " ".join(map(str, row["box"])), row["label"],
                            row["score"], int(row["uncertain"]),
                            " ".join(row["flags"])] + [
                                row["probabilities"][c] for c in self.classes])
      else:
        where = str(file) + (f" @{time:.2f}s" if frame is not None else "")
        if f.track is not None:
          where += f" #{f.track}"
        top = sorted(f.probabilities.items(), key=lambda kv: -kv[1])[:3]
        box = ",".join(str(round(v)) for v in f.box)
        label = f.label + ("?" if f.uncertain else "")
        flags = f"  [{', '.join(f.flags)}]" if f.flags else ""
        print(f"{where:32s} face {k}  [{box:>17s}]  {label:9s} {f.score:.2f}  ("
              + ", ".join(f"{n} {v:.2f}" for n, v in top) + ")" + flags, flush=True)


def job_description(args, predictor) -> dict:
  """What a --out folder's results depend on (a resumed job must match it)."""
  source = (f"workdir:{Path(args.workdir).resolve()}" if args.workdir
            else f"weights:{Path(args.weights).resolve()}" if args.weights
            else "pretrained")
  return {"model": source, "network": predictor.classifier.info.model,
          "backend": args.backend, "tta": bool(args.tta),
          "min_confidence": predictor.min_confidence, "detect": not args.no_detect,
          "detect_size": args.detect_size, "every": args.every, "fps": args.fps}


class Progress:
  """A line on stderr every few seconds while a long --out job runs."""

  def __init__(self, total: int, skipped: int, every_s: float = 5.0):
    import time
    self.clock, self.total, self.n, self.every_s = time.monotonic, total, skipped, every_s
    self.last = self.clock()

  def step(self, faces: int) -> None:
    """One more file finished."""
    self.n += 1
    if self.clock() - self.last >= self.every_s:
      self.report(faces)

  def report(self, faces: int) -> None:
    self.last = self.clock()
    print(f"{self.n}/{self.total} files finished, {faces} faces written this run",
          file=sys.stderr, flush=True)


def run(args) -> int:
  from ferjax.predictor import Predictor, annotate
  files, errors = expand(args.paths)
  for e in errors:
    print(f"error: {e}", file=sys.stderr)
  if any(f.suffix.lower() in VIDEO_SUFFIXES for f in files):
    require_extra("video", what="a video")  # before any work: a missing install, not a bad file
  predictor = Predictor.load(workdir=args.workdir, weights=args.weights, tta=args.tta,
                             backend=args.backend, detect_size=args.detect_size,
                             min_confidence=args.min_confidence)
  if not args.no_detect:
    predictor.detector  # noqa: B018 - load it now: a missing detector is a usage error
  if not predictor.classifier.calibrated:
    print("note: this model is not calibrated: its probabilities are the network's "
          "own and no face is marked uncertain "
          f"({predictor.classifier.info.calibration_advice()})", file=sys.stderr)
  results = None
  if args.out:
    from ferjax.results import ResultsDir
    results = ResultsDir(args.out, job_description(args, predictor))
    total = len(files)
    files = [f for f in files if not results.is_finished(f)]
    if total > len(files):
      print(f"resuming the job in '{args.out}': {total - len(files)} of {total} files "
            "already finished", file=sys.stderr)
    progress = Progress(total, total - len(files))
  out = results or Output("json" if args.json else "csv" if args.csv else "table",
                          predictor.classes)
  detect = False if args.no_detect else None
  annotate_dir = Path(args.annotate) if args.annotate else None
  if annotate_dir:
    try:
      annotate_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise FerjaxError(f"--annotate: cannot create the folder '{annotate_dir}': "
                        f"{describe_os_error(e)}") from None
  done, failed = 0, len(errors)

  def fail(path, message) -> None:
    nonlocal failed
    print(f"error: {path}: {message}", file=sys.stderr)
    failed += 1
    if results is not None:
      results.failed(path, message)
      progress.step(results.faces)

  def finished(path, faces: int) -> None:
    nonlocal done
    done += 1
    if results is not None:
      results.done(path, faces)
      progress.step(results.faces)

  def write_annotated(path: Path, image, faces) -> bool:
    """Draws on the image already decoded (never re-read from disk) into a new file."""
    target = None
    try:
      target = reserve_output(annotate_dir, path.stem, ".png")
      annotate(image, faces).save(target, format="PNG")
      return True
    except (OSError, FerjaxError) as e:
      if target is not None:
        target.unlink(missing_ok=True)
      fail(path, f"the annotated copy could not be written ({describe_os_error(e)})")
      return False

  images = [f for f in files if f.suffix.lower() not in VIDEO_SUFFIXES]
  videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
  def classify_group(group, decoded, crops, metas) -> None:
    for path, image, faces in zip(group, decoded,
                                  predictor.classify_crops(crops, metas)):
      if not faces:
        print(f"warning: {path}: no face found (try --no-detect for a face crop)",
              file=sys.stderr)
      out.write(path, faces)
      if annotate_dir and not write_annotated(path, image, faces):
        continue
      finished(path, len(faces))

  if args.dask is not None:
    _run_on_dask(args, predictor, images + videos, out, fail, finished)
    images, videos = [], []
  pending = ([], [], [], [])
  for path, image, c, m, error in _decode_and_detect(
      images, predictor, detect=detect, keep_images=bool(annotate_dir),
      workers=args.workers):
    if error is not None:
      fail(path, error)
      continue
    for lst, item in zip(pending, (path, image, c, m)):
      lst.append(item)
    if len(pending[0]) == GROUP:
      classify_group(*pending)
      pending = ([], [], [], [])
  classify_group(*pending)
  for path in videos:
    target = None
    try:
      if annotate_dir:
        target = reserve_output(annotate_dir, path.stem, ".mp4")
      finished(path, _run_video(path, predictor, out, args, detect, target))
    except (FerjaxError, OSError) as e:
      if target is not None and target.exists() and target.stat().st_size == 0:
        target.unlink()
      fail(path, e if isinstance(e, FerjaxError) else describe_os_error(e))
  if results is not None:
    progress.report(results.faces)
    results.close()
    # The job's whole state, files finished by earlier runs included.
    statuses = [r["status"] for r in results.finished.values()]
    done, failed = statuses.count("done"), len(errors) + statuses.count("failed")
    print(f"results: {Path(args.out) / 'results.jsonl'}", file=sys.stderr)
  if not done:
    return EXIT_NONE_DONE
  return EXIT_SOME_FAILED if failed else EXIT_ALL_DONE


def _run_on_dask(args, predictor, files, out, fail, finished) -> None:
  """The files' faces found on a Dask cluster (ferjax/cluster.py), written here."""
  from ferjax import cluster
  settings = cluster.Settings(
      workdir=args.workdir, weights=args.weights, backend=args.backend, tta=args.tta,
      detect_size=args.detect_size, min_confidence=predictor.min_confidence,
      detect=False if args.no_detect else None, every=args.every, fps=args.fps,
      smooth=args.smooth)
  client, local = cluster.client_for(args.dask or None, args.workers)
  try:
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    by_name = {str(f): f for f in files}
    for name, groups, error in cluster.run(files, settings, client, window=4 * workers):
      path = by_name[name]
      if error is not None:
        fail(path, error)
        continue
      found = 0
      for frame, t, faces in groups:
        if frame is None and not faces:
          print(f"warning: {path}: no face found (try --no-detect for a face crop)",
                file=sys.stderr)
        out.write(path, faces, frame=frame, time=t)
        found += len(faces)
      finished(path, found)
  finally:
    client.close()
    if local is not None:
      local.close()


_WORKER_DETECTOR = None


def _worker_init(detect_size: int) -> None:
  global _WORKER_DETECTOR
  from ferjax import faces
  _WORKER_DETECTOR = faces.CenterFace(max_side=detect_size, threads=1)


def _path_crops(path, detector, *, detect, keep: bool) -> tuple:
  """(path, image or None, crops, metas, error message or None) of one image file;
  `detector` returns the face detector (`predictor.image_crops`)."""
  from ferjax import images as images_lib
  from ferjax.predictor import image_crops
  try:
    image = images_lib.open_image(path)
    crops, metas = image_crops(image, detector, detect=detect)
  except FerjaxError as e:
    return path, None, None, None, str(e)
  return path, (image if keep else None), crops, metas, None


def _worker_crops(job) -> tuple:
  """In a worker process: `_path_crops` with the worker's own detector."""
  path, detect, keep = job
  return _path_crops(path, lambda: _WORKER_DETECTOR, detect=detect, keep=keep)


def _decode_and_detect(paths, predictor, *, detect, keep_images: bool, workers: int):
  """(path, image or None, crops, metas, error) per image, in order: decoded and
  searched for faces here (workers 1) or in `workers` processes (each with its own
  detector on one thread), a few images ahead of the classifier."""
  if workers <= 1 or len(paths) < 2:
    for path in paths:
      yield _path_crops(path, lambda: predictor.detector, detect=detect, keep=keep_images)
    return
  import multiprocessing
  # spawn: a fork of a process that may hold JAX's or onnxruntime's threads can deadlock.
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(workers, initializer=_worker_init, initargs=(predictor.detect_size,)) as pool:
    yield from pool.imap(_worker_crops, [(p, detect, keep_images) for p in paths],
                         chunksize=1)


def _add_audio(video_only: Path, source: Path, target: Path) -> bool:
  """Writes `target`: the frames of `video_only` with the audio of `source`, where it
  has any (True), else `video_only`'s frames alone (False). Video is copied, not
  encoded again."""
  import subprocess

  import imageio_ffmpeg
  ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
  probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(source)],
                         capture_output=True, text=True)
  has_audio = "Audio:" in probe.stderr
  cmd = [ffmpeg, "-y", "-loglevel", "error", "-i", str(video_only)]
  if has_audio:
    cmd += ["-i", str(source), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
            "-c:a", "aac", "-shortest"]
  else:
    cmd += ["-c", "copy"]
  res = subprocess.run(cmd + ["-f", "mp4", str(target)], capture_output=True, text=True)
  if res.returncode != 0:
    raise FerjaxError("the annotated video could not be written (ffmpeg: "
                      f"{res.stderr.strip().splitlines()[-1:]})")
  return has_audio


# tracked_frames' stages, in order, as its `on_stage` hears of them.
VIDEO_STAGES = ("decode", "detect_and_crop", "classify", "track")


def tracked_frames(path: Path, predictor, *, detect, every, fps, smooth,
                   on_stage: Callable[[str], None] | None = None):
  """(frame index, seconds, RGB frame, analysed frames/s, faces, VideoTracks) per
  analysed frame of a video: its faces classified, tracked and smoothed.

  `on_stage`, where given, is called with each stage's name (`VIDEO_STAGES`) as that
  stage of a frame ends, so that a caller can time the stages (ferjax.videobench)."""
  from ferjax.tracking import VideoTracks
  tracks = None
  for i, t, rgb, rate in video_frames(path, every=every, fps=fps):
    if on_stage is not None:
      on_stage("decode")
    crops, meta = predictor.crops(rgb, detect=detect)
    if on_stage is not None:
      on_stage("detect_and_crop")
    (faces,) = predictor.classify_crops([crops], [meta])
    if on_stage is not None:
      on_stage("classify")
    if tracks is None:
      tracks = VideoTracks(predictor.classes, fps=rate, smooth_s=smooth,
                           min_confidence=predictor.min_confidence)
    faces = tracks.update(faces, t)
    if on_stage is not None:
      on_stage("track")
    yield i, t, rgb, rate, faces, tracks


def _run_video(path, predictor, out, args, detect, annotate_path) -> int:
  from ferjax.predictor import annotate
  writer = tracks = None
  frames = found = 0
  frames_file = None
  if annotate_path is not None:  # the frames go here first; the audio is added after
    frames_file = reserve_output(annotate_path.parent, "." + annotate_path.stem + "-frames",
                                 ".mp4")
  try:
    for i, t, rgb, rate, faces, tracks in tracked_frames(  # noqa: B007 - used after
        path, predictor, detect=detect, every=args.every, fps=args.fps,
        smooth=args.smooth):
      out.write(path, faces, frame=i, time=t)
      frames += 1
      found += len(faces)
      if annotate_path is not None:
        if writer is None:
          import imageio_ffmpeg
          _no_python_in_forked_child()
          h, w = rgb.shape[:2]
          writer = imageio_ffmpeg.write_frames(str(frames_file), (w, h), fps=rate,
                                               macro_block_size=1)
          writer.send(None)
        from PIL import Image
        writer.send(np.asarray(annotate(Image.fromarray(rgb), faces)).tobytes())
    if writer is not None:
      writer.close()
      writer = None
      if not _add_audio(frames_file, path, annotate_path):
        print(f"note: {path}: no audio track, so the annotated video has none",
              file=sys.stderr)
  finally:
    if writer is not None:
      writer.close()
    if frames_file is not None:
      frames_file.unlink(missing_ok=True)
  if not frames:
    raise FerjaxError("the video has no frames")
  if args.timeline:
    target = reserve_output(Path(args.timeline), path.stem + "-timeline", ".png")
    try:
      tracks.timeline(target, title=f"{path.name}: expression over time per tracked face")
    except BaseException:
      target.unlink(missing_ok=True)
      raise
  if args.summary:
    rows = tracks.summary()
    if isinstance(out, Output):
      out.summary(path, rows)
    else:  # --out: the records are the results; the summary goes to the terminal
      print(f"{path}: summary\n{summary_table(rows)}", file=sys.stderr, flush=True)
  return found


def sample_photo_path() -> str:
  """The astronaut photo that ships inside ferjax (ferjax/samples/)."""
  from ferjax import samples
  return str(samples.ASTRONAUT)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m ferjax.predict", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("paths", nargs="*", metavar="PATH",
                 help="images, folders (searched recursively) or videos")
  p.add_argument("--sample", action="store_true",
                 help="also predict on a sample photo that comes installed: the "
                 "astronaut (NASA, public domain; ferjax/samples/)")
  model = p.add_mutually_exclusive_group()
  model.add_argument("--workdir", help="use a training run's best checkpoint")
  model.add_argument("--weights", help="use a weights file from `ferjax.export`")
  fmt = p.add_mutually_exclusive_group()
  fmt.add_argument("--json", action="store_true", help="one JSON object per face")
  fmt.add_argument("--csv", action="store_true", help="one CSV row per face")
  fmt.add_argument("--out", metavar="DIR",
                   help="write results to DIR as the job goes (results.jsonl, one record "
                   "per face; files.jsonl, one per finished file) instead of printing "
                   "them; the same command after an interruption resumes the job")
  p.add_argument("--annotate", metavar="OUT_DIR",
                 help="write copies with boxes and labels drawn (PNG; MP4 for videos)")
  p.add_argument("--no-detect", action="store_true",
                 help="classify each image whole (it is a face crop already)")
  p.add_argument("--tta", action="store_true",
                 help="average ten views of each face (10x the work, a little better)")
  p.add_argument("--detect-size", type=int, default=640, metavar="PIXELS",
                 help="the face detector sees the image scaled to at most this many "
                 "pixels a side (default 640; 320 is about 3x faster and misses "
                 "small faces)")
  p.add_argument("--min-confidence", type=float, metavar="P",
                 help="a face whose top probability is below P is marked uncertain "
                 "('fear? 0.27'; \"uncertain\": true); default: the model's calibrated "
                 "threshold; 0 turns it off")
  add_backend_flag(p)
  p.add_argument("--workers", type=int, default=1, metavar="N",
                 help="decode images and find their faces in N processes (default 1: "
                 "in this one); the classifier batches their faces here. With --dask "
                 "and no address: the local cluster's worker processes")
  p.add_argument("--dask", nargs="?", const="", metavar="ADDRESS",
                 help="spread the files over a Dask cluster, one task per file: the "
                 "scheduler at ADDRESS (tcp://host:8786), or a local one of --workers "
                 "processes; needs pip install -e \".[dask]\"")
  p.add_argument("--smooth", type=float, default=0.5, metavar="SECONDS",
                 help="videos: smooth each tracked face's probabilities over time with "
                 "this time constant (default 0.5; 0: each frame's own)")
  p.add_argument("--summary", action="store_true",
                 help="videos: per track, seconds in view and share of time per "
                 "emotion (a table, or a JSON line with --json)")
  p.add_argument("--timeline", metavar="DIR",
                 help="videos: write a PNG per video to DIR, one band per tracked face "
                 "coloured by its emotion over time")
  rate = p.add_mutually_exclusive_group()
  rate.add_argument("--every", type=int, metavar="N", help="videos: every N-th frame")
  rate.add_argument("--fps", type=float, help="videos: this many frames per second")
  args = p.parse_args(argv)
  if args.sample:
    args.paths.append(sample_photo_path())
  if not args.paths:
    p.error("give at least one PATH (or --sample)")
  if (args.every is not None and args.every < 1) or (args.fps is not None
                                                      and not args.fps > 0):
    p.error("--every must be at least 1 and --fps positive")
  if not 32 <= args.detect_size <= 4096:
    p.error("--detect-size must be 32 to 4096 pixels")
  if not (math.isfinite(args.smooth) and 0 <= args.smooth <= 3600):
    p.error(f"--smooth must be 0 to 3600 seconds (0: no smoothing), got {args.smooth}")
  if not 1 <= args.workers <= 256:
    p.error(f"--workers must be 1 to 256 processes, got {args.workers}")
  if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
    p.error("--min-confidence must be 0 to 1 (0: every face is answered)")
  if args.dask is not None and (args.annotate or args.timeline or args.summary):
    p.error("--annotate, --timeline and --summary are not available with --dask yet")
  if args.timeline:
    timeline = Path(args.timeline)
    if timeline.exists() and not timeline.is_dir():
      p.error(f"--timeline: '{timeline}' is a file; give a folder for the timelines")
    try:
      timeline.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      p.error(f"--timeline: cannot create the folder '{timeline}': "
              f"{describe_os_error(e)}")
  if args.annotate and Path(args.annotate).exists() and not Path(args.annotate).is_dir():
    p.error(f"--annotate: '{args.annotate}' is a file; give a folder for the annotated "
            "copies (it is created if missing)")
  sys.exit(run(args))


if __name__ == "__main__":
  run_cli(main)
