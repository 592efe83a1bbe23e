"""The sample photo that ships inside ferjax: scikit-image's astronaut (Eileen Collins,
NASA, public domain; where the file comes from: PROVENANCE.md beside it).

`python -m ferjax.predict --sample`, the load test, the video benchmark and the tests use
it, so that the base install needs no scikit-image for one photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The file, byte for byte scikit-image's skimage/data/astronaut.png.
ASTRONAUT = Path(__file__).parent / "astronaut.png"


def astronaut() -> np.ndarray:
  """The astronaut as a (512, 512, 3) uint8 RGB array: the pixels of
  `skimage.data.astronaut()`."""
  from PIL import Image
  with Image.open(ASTRONAUT) as im:
    return np.asarray(im.convert("RGB"))
