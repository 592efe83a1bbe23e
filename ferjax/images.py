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


# Rows converted at a time from a high-bit-depth image: the conversion then needs
# little memory beyond the image itself and its 8-bit result.
BAND_PIXELS = 1 << 20


def _bands(height: int, width: int):
  rows = max(1, BAND_PIXELS // max(width, 1))
  for r0 in range(0, height, rows):
    yield r0, min(height, r0 + rows)


def scale_to_8bit(a: np.ndarray, top: int) -> np.ndarray:
  """round(a * 255 / top) clipped to 0-255, as uint8, in integer arithmetic and in
  bands of rows (no float64 copy of a large image). Exact: a * 255 / top is never
  halfway between two integers for top = 65535, and is an integer for top = 255."""
  out = np.empty(a.shape, np.uint8)
  for r0, r1 in _bands(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64))):
    band = a[r0:r1].astype(np.int64)
    out[r0:r1] = np.clip((band * 255 + top // 2) // top, 0, 255)
  return out


def to_8bit(img: Image.Image) -> Image.Image:
  """`img` in mode L, RGB or RGBA with 8-bit values; high-bit-depth images are scaled
  to 0-255 (a 16-bit image by its 16-bit range, a float image by its own range).
  High-bit-depth images are converted a band of rows at a time."""
  if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    lo, hi = img.getextrema()
    top = 65535 if hi > 255 or img.mode.startswith("I;16") else 255
    out = np.empty((img.height, img.width), np.uint8)
    for r0, r1 in _bands(img.height, img.width):
      band = np.asarray(img.crop((0, r0, img.width, r1)))
      out[r0:r1] = scale_to_8bit(band, top)
    return Image.fromarray(out)
  if img.mode == "F":
    lo, hi = img.getextrema()
    lo, hi = (0.0, 1.0) if lo >= 0 and hi <= 1 else (min(lo, 0.0), max(hi, 1.0))
    out = np.empty((img.height, img.width), np.uint8)
    for r0, r1 in _bands(img.height, img.width):
      band = np.asarray(img.crop((0, r0, img.width, r1)), np.float64)
      out[r0:r1] = np.clip(np.round((band - lo) / max(hi - lo, 1e-12) * 255.0), 0, 255)
    return Image.fromarray(out)
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
  except PermissionError:
    raise ImageError(f"{where} cannot be read: permission denied.") from None
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
    a = scale_to_8bit(a, 65535)
  elif np.issubdtype(a.dtype, np.floating):
    a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise ImageError(f"An image array must be uint8, uint16 or float; got {a.dtype}.")
  return Image.fromarray(a)
