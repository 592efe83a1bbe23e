"""TFDS builders of the data sets ferjax trains on."""
