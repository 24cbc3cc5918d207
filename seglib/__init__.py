"""seglib: deep-learning customer segmentation at warehouse scale."""

__version__ = "0.1.0"
