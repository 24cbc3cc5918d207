"""Numpy kernels shared by layers that must not import each other (training's IDEC centres and the
driver-side k-means of clustering)."""
