"""Training on a lent GPU machine that cannot install TFDS or read ../shared.

Such a machine has JAX, Flax, optax and orbax but no tensorflow-datasets and no
network, and only the repository travels to it (64 MiB at most). So the training
images travel as their original JPEG bytes (42 MiB for the 6 classes), in exactly the
order `ferjax.input_pipeline.load_fer2013` gives them here; the validation cut made
there is then the one made here, and a model trained there is scored here, on the CPU,
with `python -m ferjax.evaluate --weights`.

    # here: pack the training split (checks every image decodes to the same pixels)
    python experiments/gpu_runs.py pack --data ../shared/data/fer2013.zip --out .gpu/train6.zip
    # there: train exactly as `python -m ferjax.train ARGS` would, on the packed images
    PYTHONPATH=. python experiments/gpu_runs.py train --pack .gpu/train6.zip -- ARGS
    # there: weight averaging on top of a run (experiments/swa_finetune.py ARGS)
    PYTHONPATH=. python experiments/gpu_runs.py swa --pack .gpu/train6.zip -- ARGS

The test split does not travel: nothing there may look at it, and the report written
there has no test row. `experiments/gpu_sweep.sh` runs the recipes of a session.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def _decode(raw: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.uint8)


def pack(data: str, out: str, num_classes: int = 6) -> None:
  from ferjax import input_pipeline
  train = input_pipeline.load_fer2013(data, splits=("train",),
                                      num_classes=num_classes)["train"]
  by_pixels: dict[str, list[bytes]] = {}
  with zipfile.ZipFile(data) as z:
    for info in z.infolist():
      parts = info.filename.split("/")
      if info.is_dir() or len(parts) < 3 or parts[-3] != "train":
        continue
      raw = z.read(info)
      by_pixels.setdefault(hashlib.sha1(_decode(raw).tobytes()).hexdigest(),
                           []).append(raw)
  with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for k, image in enumerate(train.images):
      candidates = by_pixels.get(hashlib.sha1(image.tobytes()).hexdigest())
      if not candidates:
        sys.exit(f"image {k} of the loaded split has no JPEG in {data} that decodes "
                 "to it")
      z.writestr(f"{k:05d}.jpg", candidates[0])
    buf = io.BytesIO()
    np.save(buf, train.labels)
    z.writestr("labels.npy", buf.getvalue())
    z.writestr("sha256.txt", hashlib.sha256(train.images.tobytes()).hexdigest())
  print(f"packed {len(train)} images into {out}")


def unpack(path: str):
  from ferjax import input_pipeline
  with zipfile.ZipFile(path) as z:
    names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
    images = np.stack([_decode(z.read(n)) for n in names])
    labels = np.load(io.BytesIO(z.read("labels.npy")))
    expected = z.read("sha256.txt").decode().strip()
  got = hashlib.sha256(images.tobytes()).hexdigest()
  print(f"unpacked {len(images)} images; pixels "
        f"{'identical to' if got == expected else 'DIFFERENT from'} the packing "
        "machine's", file=sys.stderr)
  return input_pipeline.Split(images, labels)


def use_pack(pack_path: str) -> None:
  """Makes `ferjax.input_pipeline.load_fer2013` return the packed training split."""
  from ferjax import input_pipeline
  split = unpack(pack_path)

  def load_fer2013(data, *, splits, num_classes=6, data_dir=None, required=None):
    del data, data_dir, required
    if num_classes != 6 or "train" not in splits:
      raise SystemExit("the pack holds the 6-class train split only")
    return {"train": split}

  input_pipeline.load_fer2013 = load_fer2013


def train(pack_path: str, argv: list[str]) -> None:
  from ferjax import train as train_lib
  from ferjax.errors import run_cli
  use_pack(pack_path)
  run_cli(lambda: train_lib.main(argv))


def swa(pack_path: str, argv: list[str]) -> None:
  """`experiments/swa_finetune.py ARGS` on the packed images."""
  sys.path.insert(0, str(Path(__file__).parent))
  import swa_finetune
  use_pack(pack_path)
  swa_finetune.main(argv + ["--data", pack_path])


def main() -> None:
  argv = sys.argv[1:]
  rest = []
  if "--" in argv:
    argv, rest = argv[:argv.index("--")], argv[argv.index("--") + 1:]
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="cmd", required=True)
  pk = sub.add_parser("pack")
  pk.add_argument("--data", required=True)
  pk.add_argument("--out", required=True)
  for name in ("train", "swa"):
    sub.add_parser(name).add_argument("--pack", required=True)
  args = p.parse_args(argv)
  if args.cmd == "pack":
    pack(args.data, args.out)
  elif args.cmd == "train":
    train(args.pack, rest)
  else:
    swa(args.pack, rest)


if __name__ == "__main__":
  main()
