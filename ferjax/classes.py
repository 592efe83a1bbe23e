"""The FER2013 emotion classes: the one place that names them and fixes their order.

FER2013's csv numbers its labels 0..6 in the order of `CLASSES_7`; the Kaggle image
folders use the same names in lower case. The 6-class task (the default) drops Disgust,
which has only 436 training images, and keeps the others in the same relative order.
"""

CLASSES_7 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CLASSES_6 = tuple(c for c in CLASSES_7 if c != "disgust")
DROPPED_IN_6 = "disgust"


def class_names(num_classes: int) -> tuple[str, ...]:
  """Returns the class names of the 6- or 7-class task, index = label."""
  if num_classes == 7:
    return CLASSES_7
  if num_classes == 6:
    return CLASSES_6
  raise ValueError(f"num_classes must be 6 or 7, got {num_classes}")
