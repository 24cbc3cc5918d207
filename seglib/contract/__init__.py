"""The contract every layer shares, with no Spark or torch: the typed config, errors, table and column
names, the artifact layout under model_dir and version stamps, URIs, and the synthetic data's domain
vocabulary. Validating a config imports nothing heavier than pydantic."""
