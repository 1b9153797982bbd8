"""deephemnma: continuous conformational heterogeneity from cryo-EM images (DeepHEMNMA)."""

__version__ = "0.1.0"
