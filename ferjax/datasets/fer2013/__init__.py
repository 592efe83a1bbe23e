"""FER2013 as a TFDS builder (`Fer2013`) and the readers of its two on-disk forms."""

from ferjax.datasets.fer2013.fer2013 import Fer2013, builder_for

__all__ = ["Fer2013", "builder_for"]
