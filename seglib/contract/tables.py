"""Every table seglib writes and the columns other stages read from them.

The one place a stage looks up another stage's output: stages import these names, never each other.
A new output table is named here, written by its stage through `Warehouse.write_snapshot`, and listed
in the README's table of outputs.
"""

from __future__ import annotations

# Every snapshot table is partitioned by this column; a rerun replaces exactly its snapshot.
SNAPSHOT_COLUMN = "snapshot_date"

# Input validation
QUARANTINE_TABLE = "quarantine"

# Synthetic data: the planted persona of every generated customer (read by tests and benchmarks only).
TRUTH_TABLE = "persona_truth"

# Features
FEATURES_TABLE = "customer_features"
FEATURE_CATALOG_TABLE = "feature_catalog"
FEATURE_VECTOR_COLUMN = "features"
PREPROCESSING_VERSION_COLUMN = "preprocessing_version"

# The temporal pretext task of train.forecast (written by the features stage, read by training): per
# customer seen by the cut-off, the features as of the cut-off and the behaviour of the window after it.
PRETEXT_TABLE = "forecast_pretext"
PRETEXT_INPUT_COLUMN = "earlier_features"
PRETEXT_TARGET_COLUMN = "window_targets"

# Lifetime value (written by the features stage, joined into the segments)
CUSTOMER_VALUE_TABLE = "customer_value"
LIFETIME_VALUE_FIT_TABLE = "lifetime_value_fit"
LIFETIME_VALUE_COLUMNS = ("probability_alive", "expected_purchases", "expected_spend")

# Representation
EMBEDDINGS_TABLE = "customer_embeddings"
EMBEDDING_COLUMN = "embedding"
ERROR_COLUMN = "reconstruction_error"
# The decoder's output: the customer's scaled features as the model sees them (see cluster.space).
RECONSTRUCTION_COLUMN = "reconstruction"
# The embeddings-table column of each cluster.space.
SPACE_COLUMNS: dict[str, str] = {"embedding": EMBEDDING_COLUMN, "reconstruction": RECONSTRUCTION_COLUMN}

# Segments
SEGMENTS_TABLE = "customer_segments"
PROFILES_TABLE = "segment_profiles"
SEGMENT_CATALOG_TABLE = "segment_catalog"
SELECTION_TABLE = "segment_k_selection"
MIGRATION_TABLE = "segment_migration"
RUNS_TABLE = "segmentation_runs"
# Before novelty became a flag beside the segment, novel customers were put in segment -1; saved states
# and tables of those runs may still hold it.
LEGACY_NOVEL_SEGMENT_ID = -1

# Serving
DRIFT_TABLE = "segment_drift"
