"""ferjax.samples: the shipped astronaut is scikit-image's, byte for byte and pixel for
pixel."""

import hashlib

import numpy as np
import pytest

from ferjax import samples

# ferjax/samples/PROVENANCE.md; scikit-image's data registry records the same.
ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"


def test_the_shipped_file_is_the_one_recorded():
  assert hashlib.sha256(samples.ASTRONAUT.read_bytes()).hexdigest() == ASTRONAUT_SHA256


def test_astronaut_is_an_rgb_photo():
  photo = samples.astronaut()
  assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8
  assert photo.std() > 30  # a photograph, not a blank


def test_astronaut_has_scikit_images_pixels():
  skimage_data = pytest.importorskip("skimage.data")
  np.testing.assert_array_equal(samples.astronaut(), skimage_data.astronaut())
