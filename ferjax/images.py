"""Opening users' images: any mode PIL reads (16-bit, float, palette, CMYK, RGBA) to
8-bit RGB or grayscale with its values scaled, not clipped; EXIF rotation honoured;
a clear message for a file that is not an image, is truncated, or is too large.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferjax.errors import DataError

# Images with more pixels than this are refused (decompression bombs). Pillow itself
# refuses twice its MAX_IMAGE_PIXELS (179 million by default) and warns above it; the
# warning is ours to give, as an error with a message, so it is silenced once here
# (changing Pillow's limit per call would not be thread-safe).
MAX_PIXELS = 178_000_000
IMAGE_SIZE = 48
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageError(DataError):
  """An input is not an image that can be read."""


def to_8bit(img: Image.Image) -> Image.Image:
  """`img` in mode L, RGB or RGBA with 8-bit values; high-bit-depth images are scaled
  to 0-255 (a 16-bit image by its 16-bit range, a float image by its own range)."""
  if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    a = np.asarray(img, dtype=np.float64)
    top = 65535.0 if a.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(np.round(a * 255.0 / top), 0, 255).astype(np.uint8))
  if img.mode == "F":
    a = np.asarray(img, dtype=np.float64)
    lo, hi = (0.0, 1.0) if a.min(initial=0) >= 0 and a.max(initial=0) <= 1 else (
        a.min(initial=0), a.max(initial=1))
    a = (a - lo) / max(hi - lo, 1e-12)
    return Image.fromarray(np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8))
  if img.mode in ("L", "RGB", "RGBA"):
    return img
  try:
    if img.mode in ("LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info):
      return img.convert("RGBA")
    return img.convert("RGB")
  except ValueError:
    raise ImageError(f"Images in mode {img.mode} cannot be converted to RGB; save the "
                     "image as an 8-bit RGB or grayscale JPEG or PNG.") from None


def to_rgb(img: Image.Image) -> Image.Image:
  """8-bit RGB; transparent pixels are laid over white."""
  img = to_8bit(img)
  if img.mode == "RGBA":
    back = Image.new("RGB", img.size, (255, 255, 255))
    back.paste(img, mask=img.getchannel("A"))
    return back
  return img.convert("RGB")


def to_gray(img: Image.Image) -> Image.Image:
  """8-bit grayscale (mode L)."""
  img = to_8bit(img)
  return img if img.mode == "L" else to_rgb(img).convert("L")


def to_face_array_image(img: Image.Image) -> Image.Image:
  """Any image, already a face crop, to 48x48 grayscale: centre square crop, resize."""
  img = to_gray(img)
  w, h = img.size
  if w != h:
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
  return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def open_image(source, *, name: str | None = None, max_pixels: int | None = None
               ) -> Image.Image:
  """A loaded PIL image, upright (EXIF orientation applied), from a path, bytes, a PIL
  image or a NumPy array ([H, W] or [H, W, 3|4], uint8, uint16 or float in [0, 1]).
  Images of more than `max_pixels` (default MAX_PIXELS) are refused before decoding."""
  limit = MAX_PIXELS if max_pixels is None else max_pixels
  if isinstance(source, Image.Image):
    if source.getexif().get(0x0112, 1) in (0, 1):  # upright already: no copy
      return source
    return ImageOps.exif_transpose(source)
  if isinstance(source, np.ndarray):
    return _from_array(source)
  if isinstance(source, (bytes, bytearray, memoryview)):
    where, fp = name or "the uploaded data", io.BytesIO(bytes(source))
  else:
    path = Path(source)
    where = f"'{path}'"
    if not path.is_file():
      raise ImageError(f"No such image file: {where}.")
    fp = path
  size = fp.getbuffer().nbytes if isinstance(fp, io.BytesIO) else fp.stat().st_size
  if not size:
    raise ImageError(f"{where} is empty (0 bytes).")
  try:
    with Image.open(fp) as img:  # reads the header only
      if img.width * img.height > limit:
        raise Image.DecompressionBombError("too many pixels")
      img.load()
      return ImageOps.exif_transpose(img)
  except Image.DecompressionBombError:
    raise ImageError(f"{where} has more than {limit:,} pixels; scale it down "
                     "first.") from None
  except UnidentifiedImageError:
    raise ImageError(f"{where} is not an image that can be read (JPEG, PNG, WebP, BMP, "
                     "GIF, TIFF ...).") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageError(f"{where} cannot be decoded ({e}); it may be truncated or "
                     "corrupt.") from None


def _from_array(a: np.ndarray) -> Image.Image:
  if a.ndim == 3 and a.shape[2] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
    raise ImageError(f"An image array must be [H, W], [H, W, 3] or [H, W, 4]; got shape "
                     f"{a.shape}.")
  if a.dtype == np.uint16:
    a = np.round(a.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
  elif np.issubdtype(a.dtype, np.floating):
    a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise ImageError(f"An image array must be uint8, uint16 or float; got {a.dtype}.")
  return Image.fromarray(a)
