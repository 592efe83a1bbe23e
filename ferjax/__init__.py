"""ferjax: facial-expression classifiers on FER2013, trained in pure JAX.

    import ferjax
    predictor = ferjax.Predictor.from_pretrained()   # face detector + shipped model
    faces = predictor.predict("photo.jpg")           # [FacePrediction(box, label, ...)]
    classifier = ferjax.load_pretrained()            # 48x48 crops -> probabilities
"""

__version__ = "0.2.0"
__all__ = ["Predictor", "FacePrediction", "Classifier", "load_pretrained"]


def __getattr__(name):
  # Lazy, so that `import ferjax` (and every ferjax command) does not pay for JAX and
  # the detector until they are used.
  if name in ("Predictor", "FacePrediction"):
    from ferjax import predictor
    return getattr(predictor, name)
  if name in ("Classifier", "load_pretrained"):
    from ferjax import inference
    return getattr(inference, name)
  raise AttributeError(f"module 'ferjax' has no attribute '{name}'")
