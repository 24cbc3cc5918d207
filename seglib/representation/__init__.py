"""The learned representation: model kinds (`models.MODEL_KINDS`), the per-rank training loop, the
launchers that run it on Spark executors (`launchers.LAUNCHERS`), MLflow tracking, the `train` stage,
and the `embed` stage that maps customers to embeddings.

A new model kind is one entry in `models.MODEL_KINDS` (plus its config Literal and tests)."""
