"""ferjax: facial-expression classifiers on FER2013, trained in pure JAX."""

__version__ = "0.1.0"
