"""Scoring new snapshots with a saved segmentation (`seg score`) and measuring drift against it."""
