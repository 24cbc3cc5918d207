"""Point-in-time customer features: one module per feature family (transactions, events, customer
attributes), the saved preprocessing pipeline, and the `features` stage that writes them.

A new feature family is a module here that returns its `FeatureSpec`s and a per-customer DataFrame,
joined in `assembly.build_features`."""
