"""Segments from embeddings: clustering algorithms (`algorithms.ALGORITHMS`), k selection, profiles,
names, surrogate-tree explanations, matching with the previous run, the saved segmentation state, and
the `cluster` stage that writes the segment tables.

A new clustering algorithm is one entry in `algorithms.ALGORITHMS` (plus its config Literal and tests)."""
