"""ferjax.images: users' images of any mode, scaled not clipped, upright, with messages."""

import io

import numpy as np
import pytest
from PIL import Image

from ferjax import images, samples
from ferjax.images import ImageError


def _face() -> np.ndarray:
  """A real face (the astronaut sample) as 8-bit grayscale, 96x96."""
  gray = Image.fromarray(samples.astronaut()).convert("L").crop((170, 50, 280, 180))
  return np.asarray(gray.resize((96, 96)), np.uint8)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
  face = _face()
  path = tmp_path / "face16.png"
  Image.fromarray(face.astype(np.uint16) * 257).save(path)  # 0..255 -> 0..65535
  with Image.open(path) as im:
    assert im.mode.startswith("I")  # PIL reads it as 16/32-bit integers
  got = np.asarray(images.to_gray(images.open_image(path)))
  np.testing.assert_array_equal(got, face)
  # The training data path scales it the same way.
  crop = np.asarray(images.to_face_array_image(images.open_image(path)))
  assert crop.shape == (48, 48) and crop.std() > 20 and crop.max() < 255


def test_arrays_of_every_dtype():
  face = _face()
  for a in (face, face.astype(np.uint16) * 257, face / 255.0,
            np.stack([face] * 3, -1), np.stack([face] * 3 + [np.full_like(face, 255)], -1)):
    got = np.asarray(images.to_gray(images.open_image(a)), np.int16)
    assert np.abs(got - face).max() <= 1
  with pytest.raises(ImageError, match="must be"):
    images.open_image(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("mode", ["P", "CMYK", "LA", "RGBA", "1", "F"])
def test_other_modes_become_8bit(mode):
  rgb = Image.fromarray(np.stack([_face()] * 3, -1))
  img = {"P": lambda: rgb.quantize(colors=256),  # an adaptive palette, as saved GIFs
         "F": lambda: rgb.convert("L").convert("F")}.get(mode, lambda: rgb.convert(mode))()
  gray = np.asarray(images.to_gray(img), np.int16)
  assert gray.shape == (96, 96)
  if mode in ("P", "LA", "RGBA", "F", "CMYK"):
    assert np.abs(gray - _face()).mean() < 8


def test_exif_orientation_is_applied(tmp_path):
  upright = Image.fromarray(np.stack([_face()] * 3, -1))
  upright = upright.crop((0, 0, 96, 60))  # not square, to see the rotation
  stored = upright.transpose(Image.Transpose.ROTATE_90)  # 60x96
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
  path = tmp_path / "rotated.jpg"
  stored.save(path, exif=exif, quality=95)
  got = images.open_image(path)
  assert got.size == (96, 60)
  diff = np.abs(np.asarray(got.convert("L"), np.int16)
                - np.asarray(upright.convert("L"), np.int16))
  assert diff.mean() < 6


def test_bad_files_get_messages(tmp_path):
  (tmp_path / "empty.jpg").write_bytes(b"")
  (tmp_path / "text.jpg").write_text("not an image")
  buf = io.BytesIO()
  Image.fromarray(_face()).save(buf, format="PNG")
  (tmp_path / "cut.png").write_bytes(buf.getvalue()[:200])
  cases = {"empty.jpg": "is empty", "text.jpg": "is not an image",
           "cut.png": "cannot be decoded", "missing.jpg": "No such image file"}
  for name, message in cases.items():
    with pytest.raises(ImageError, match=message):
      images.open_image(tmp_path / name)
  with pytest.raises(ImageError, match="is empty"):
    images.open_image(b"")


def test_modes_without_rgb_conversion_get_a_message():
  # Pillow cannot convert premultiplied 'La' (seen in some TIFFs) to RGB.
  with pytest.raises(ImageError, match="mode La cannot be converted"):
    images.to_rgb(Image.new("La", (8, 8)))


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
  monkeypatch.setattr(images, "MAX_PIXELS", 1000)
  path = tmp_path / "big.png"
  Image.new("L", (100, 100)).save(path)
  with pytest.raises(ImageError, match="more than 1,000 pixels"):
    images.open_image(path)
  with pytest.raises(ImageError, match="more than 9,999 pixels"):
    images.open_image(path, max_pixels=9_999)
  assert images.open_image(path, max_pixels=10_000).size == (100, 100)


def test_16_bit_scaling_in_integers_equals_the_float64_rounding():
  from ferjax.images import scale_to_8bit
  every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
  reference = np.round(every.astype(np.float64) * 255.0 / 65535.0)
  assert np.array_equal(scale_to_8bit(every, 65535), reference.astype(np.uint8))
  small = np.arange(-5, 300, dtype=np.int32).reshape(1, -1)  # mode I: clipped
  reference = np.clip(np.round(small * 255.0 / 255.0), 0, 255)
  assert np.array_equal(scale_to_8bit(small, 255), reference.astype(np.uint8))


def test_a_16_bit_image_taller_than_a_band_converts_as_a_whole(monkeypatch):
  from ferjax import images
  monkeypatch.setattr(images, "BAND_PIXELS", 64)  # many bands of one row or so
  rng = np.random.default_rng(0)
  a = rng.integers(0, 65536, (37, 50), dtype=np.uint16)
  img = Image.fromarray(a)  # mode I;16
  assert img.mode == "I;16"
  expect = np.round(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
  assert np.array_equal(np.asarray(images.to_8bit(img)), expect)
  f = Image.fromarray((a / 65535.0 * 3 - 1).astype(np.float32))  # mode F, beyond [0, 1]
  lo, hi = min(f.getextrema()[0], 0.0), max(f.getextrema()[1], 1.0)
  ref = np.clip(np.round((np.asarray(f, np.float64) - lo) / (hi - lo) * 255), 0, 255)
  assert np.array_equal(np.asarray(images.to_8bit(f)), ref.astype(np.uint8))
