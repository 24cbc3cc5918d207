"""Typed configuration: YAML in conf/, validated by pydantic, overridable with `--set key=value`.

Unknown keys are rejected so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seglib.contract.domain import PERSONAS
from seglib.contract.errors import ConfigError
from seglib.contract.uris import mask_credentials

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def validate_identifier(value: str, what: str) -> str:
    """Reject anything but a plain SQL identifier before it can reach a SQL string."""
    # fullmatch: `$` in match() also matches before a trailing newline, which would reach the SQL.
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid identifier: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 128 characters)"
        )
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SparkConfig(_Strict):
    master: str | None = Field(
        default="local[2]",
        description="Spark master for sessions that seglib opens; null keeps what spark-submit set.",
    )
    app_name: str = "seglib"
    shuffle_partitions: int = Field(default=4, ge=1)
    driver_memory: str = Field(default="2g", pattern=r"^\d+[kmgt]?$")
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, passed as-is.")


class StorageConfig(_Strict):
    warehouse_dir: str = Field(default="seg-data/warehouse", description="Root of the output tables.")
    model_dir: str = Field(default="seg-data/models", description="Trained models and preprocessing.")
    cache_dir: str = Field(default="seg-data/cache", description="Petastorm's materialised training data.")
    catalog: Identifier | None = Field(
        default=None,
        description="Catalog of the output tables (a Unity Catalog catalog, or spark_catalog): names become "
        "catalog.database.table; null: the session's current catalog, names database.table.",
    )
    database: Identifier = "seg"
    format: Literal["delta", "parquet"] = "delta"
    tables: Literal["external", "managed"] = Field(
        default="external",
        description="external: tables in folders under warehouse_dir, registered by location (local "
        "default); managed: the catalog keeps the table files (Unity Catalog managed Delta tables).",
    )

    @field_validator("database")
    @classmethod
    def _database_is_identifier(cls, value: str) -> str:
        return validate_identifier(value, "storage.database")

    @field_validator("catalog")
    @classmethod
    def _catalog_is_identifier(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value, "storage.catalog")

    @model_validator(mode="after")
    def _managed_tables_are_delta(self) -> StorageConfig:
        if self.tables == "managed" and self.format != "delta":
            raise ValueError(
                "storage.tables=managed writes managed Delta tables: set storage.format=delta, or keep "
                "storage.tables=external for Parquet folders"
            )
        return self


class SourceConfig(_Strict):
    """Where one raw table is read from: a catalog table, or Delta/Parquet/CSV files at a path."""

    format: Literal["table", "delta", "parquet", "csv"] = "table"
    name: str | None = Field(
        default=None,
        description="Catalog table: `table` (in input.database), `database.table` or `catalog.database.table`.",
    )
    path: str | None = Field(
        default=None, description="Files of a delta, parquet or csv source (local or URL)."
    )
    options: dict[str, str] = Field(
        default_factory=dict, description="Reader options, e.g. {header: 'true', delimiter: ';'} for CSV."
    )
    csv_schema: str | None = Field(
        default=None, description="DDL schema of a CSV source, e.g. 'id STRING, ts STRING, amount DOUBLE'."
    )

    @model_validator(mode="after")
    def _one_location(self) -> SourceConfig:
        if self.format == "table":
            if not self.name or self.path:
                raise ValueError("a table source needs `name` (table or database.table) and no `path`")
            parts = self.name.split(".")
            if len(parts) > 3:
                raise ValueError(
                    f"source name {self.name!r} must be `table`, `database.table` or `catalog.database.table`"
                )
            for part in parts:
                validate_identifier(part, "source name part")
        else:
            if not self.path or self.name:
                raise ValueError(f"a {self.format} source needs `path` (a folder, file or URL) and no `name`")
        if self.csv_schema is not None and self.format != "csv":
            raise ValueError("csv_schema applies to csv sources only")
        return self


def _validate_column_names(mapping: BaseModel, section: str) -> None:
    for role, column in mapping:
        if isinstance(column, str):
            validate_identifier(column, f"{section}.{role}")


class TransactionColumns(_Strict):
    """Your column for each role; null means the table has no such column (its features are skipped)."""

    customer_id: Identifier = "customer_id"
    timestamp: Identifier = "transaction_ts"
    amount: Identifier = "amount"
    transaction_id: Identifier | None = "transaction_id"
    order_id: Identifier | None = "order_id"
    quantity: Identifier | None = "quantity"
    category: Identifier | None = "category"
    channel: Identifier | None = "channel"
    discount: Identifier | None = "discount"
    is_return: Identifier | None = "is_return"

    @model_validator(mode="after")
    def _identifiers(self) -> TransactionColumns:
        _validate_column_names(self, "input.transactions.columns")
        return self


class CustomerColumns(_Strict):
    customer_id: Identifier = "customer_id"
    signup_date: Identifier | None = "signup_date"
    age: Identifier | None = "age"
    birth_date: Identifier | None = None
    gender: Identifier | None = "gender"
    region: Identifier | None = "region"

    @model_validator(mode="after")
    def _identifiers(self) -> CustomerColumns:
        _validate_column_names(self, "input.customers.columns")
        if self.age and self.birth_date:
            raise ValueError("map either age or birth_date in input.customers.columns, not both")
        return self


class EventColumns(_Strict):
    customer_id: Identifier = "customer_id"
    timestamp: Identifier = "event_ts"
    session_id: Identifier | None = Field(
        default="session_id", description="null: sessions are cut at input.events.session_gap_minutes"
    )
    event_type: Identifier | None = "event_type"
    category: Identifier | None = None

    @model_validator(mode="after")
    def _identifiers(self) -> EventColumns:
        _validate_column_names(self, "input.events.columns")
        return self


EventKind = Literal["view", "search", "add_to_cart", "purchase"]
EVENT_KINDS: tuple[EventKind, ...] = ("view", "search", "add_to_cart", "purchase")


def _default_event_types() -> dict[EventKind, list[str]]:
    return {"view": ["view"], "search": ["search"], "add_to_cart": ["cart"], "purchase": ["purchase"]}


class TransactionsInput(_Strict):
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(name="transactions"))
    columns: TransactionColumns = Field(default_factory=TransactionColumns)
    timestamp_format: str | None = Field(
        default=None, description="Pattern of string timestamps, e.g. 'dd/MM/yyyy HH:mm'; null: ISO 8601."
    )


class CustomersInput(_Strict):
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(name="customers"))
    columns: CustomerColumns = Field(default_factory=CustomerColumns)
    date_format: str | None = Field(default=None, description="Pattern of string dates; null: ISO 8601.")
    categorical_attributes: list[Identifier] = Field(
        default_factory=list, description="Extra columns to one-hot encode (e.g. plan, segment_code)."
    )
    numeric_attributes: list[Identifier] = Field(
        default_factory=list, description="Extra numeric columns to scale (e.g. credit_limit)."
    )

    @model_validator(mode="after")
    def _identifiers(self) -> CustomersInput:
        for column in (*self.categorical_attributes, *self.numeric_attributes):
            validate_identifier(column, "input.customers attribute")
        return self


class EventsInput(_Strict):
    source: SourceConfig = Field(default_factory=lambda: SourceConfig(name="events"))
    columns: EventColumns = Field(default_factory=EventColumns)
    timestamp_format: str | None = None
    event_types: dict[EventKind, list[str]] = Field(
        default_factory=_default_event_types,
        description="Your event type values for each kind seglib counts (compared case-insensitively).",
    )
    session_gap_minutes: int = Field(default=30, ge=1, le=1440)

    @field_validator("event_types")
    @classmethod
    def _every_kind(cls, value: dict[EventKind, list[str]]) -> dict[EventKind, list[str]]:
        missing = [kind for kind in EVENT_KINDS if not value.get(kind)]
        if missing:
            raise ValueError(
                f"input.events.event_types needs at least one value for each of {list(EVENT_KINDS)}; "
                f"missing: {missing} (use a value your data never holds if it has no such events)"
            )
        return value


class InputConfig(_Strict):
    """The raw tables. Only transactions are required; set customers or events to null if you lack them."""

    database: Identifier = Field(
        default="seg_raw", description="Catalog database of table sources named without one."
    )
    transactions: TransactionsInput = Field(default_factory=TransactionsInput)
    customers: CustomersInput | None = Field(default_factory=CustomersInput)
    events: EventsInput | None = Field(default_factory=EventsInput)

    @field_validator("database")
    @classmethod
    def _database_is_identifier(cls, value: str) -> str:
        return validate_identifier(value, "input.database")


class GenerateConfig(_Strict):
    customers: int = Field(default=3000, ge=10, le=100_000_000)
    seed: int = 7
    start_date: dt.date = dt.date(2024, 1, 1)
    end_date: dt.date = dt.date(2025, 12, 31)
    partitions: int = Field(default=4, ge=1)
    domain: Literal["ecommerce", "retail", "banking", "mobile_app", "healthcare"] = Field(
        default="ecommerce", description="Vocabulary and purchase/browse balance of the generated business."
    )
    orders_scale: float = Field(
        default=1.0,
        gt=0,
        le=20,
        description="Multiplies every persona's mean number of orders (heavier buyers, for scale runs).",
    )
    dirty_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Share of rows given one row-level problem each (for testing).",
    )
    engagement_spread: float = Field(
        default=0.0,
        ge=0.0,
        le=2.0,
        description="Log-normal sd of each customer's own activity level within its persona "
        "(0 = every customer of a persona as active on average; 1 = occasional to heavy users).",
    )
    persona_contrast: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="1 = personas as planted; lower moves their behaviour toward the average so they overlap.",
    )
    persona_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Change the mix of planted personas, e.g. {bargain_hunter: 0.6} (others keep theirs).",
    )

    @field_validator("persona_weights")
    @classmethod
    def _known_personas(cls, value: dict[str, float]) -> dict[str, float]:
        known = [persona.name for persona in PERSONAS]
        for name, weight in value.items():
            if name not in known:
                raise ValueError(
                    f"generate.persona_weights: unknown persona {name!r}; the personas are {known}"
                )
            if weight < 0:
                raise ValueError(f"generate.persona_weights.{name} must be >= 0 (got {weight})")
        return value

    @model_validator(mode="after")
    def _dates_in_order(self) -> GenerateConfig:
        if (self.end_date - self.start_date).days < 400:
            raise ValueError(
                "generate.end_date must be at least 400 days after generate.start_date "
                "so that every persona's purchase history fits"
            )
        return self


FeatureWeighting = Literal["family", "none"]


class FeaturesConfig(_Strict):
    snapshot_date: dt.date = dt.date(2025, 12, 31)
    windows_days: list[int] = Field(
        default_factory=lambda: [30, 90, 365],
        description="Look-back windows of the windowed counts and spend.",
    )
    trend_window_days: int = Field(
        default=90, ge=1, description="Spend trend: this many recent days against the same span before."
    )
    max_categories: int = Field(
        default=10, ge=1, le=100, description="Most frequent categories (and channels) to share out."
    )
    recency_cap_days: int = Field(
        default=730, ge=1, description="Recency of customers who never bought (and the cap for all others)."
    )
    snapshot_grace_days: int = Field(
        default=90,
        ge=0,
        description="Stop when the snapshot is more than this many days after the last transaction.",
    )
    min_rate_support: int = Field(
        default=3,
        ge=1,
        description=(
            "Conversion rates (add-to-cart rate, view-to-purchase, cart abandonment) of a customer with fewer "
            "visits, views or carts than this are left empty and get the population median: a rate over one "
            "or two visits is 0 or 1 and splits otherwise alike customers into artificial groups."
        ),
    )
    weighting: FeatureWeighting = Field(
        default="none",
        description=(
            "family: after standard scaling, each feature family (recency, frequency, monetary, timing, "
            "categories, ...) is weighted to the variance of one feature, so that a family with many "
            "variants (spend in three windows, ten category shares) does not outweigh recency; none: every "
            "standardized feature counts alike. Applies when a preprocessing version is fitted."
        ),
    )
    refit: bool = Field(default=False, description="Refit the saved preprocessing pipeline.")
    timezone: str = Field(
        default="UTC",
        description=(
            "IANA time zone of business days (e.g. America/New_York): a snapshot day ends at midnight there, "
            "and recency, windows, weekdays and hours of the day are counted in it. Timestamps stored without "
            "a zone are read as times in this zone."
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"features.timezone {value!r} is not a known IANA time zone; use a name such as UTC, "
                "Europe/Berlin or America/New_York"
            ) from None
        return value

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if not value or any(days < 1 for days in value) or len(set(value)) != len(value):
            raise ValueError(
                "features.windows_days must list distinct positive day counts, e.g. [30, 90, 365]"
            )
        return sorted(value)


class IdecConfig(_Strict):
    clusters: int | None = Field(
        default=None,
        ge=2,
        le=1000,
        description="Cluster centres fine-tuned with the encoder; null = cluster.k.",
    )
    epochs: int = Field(default=20, ge=1, description="Clustering epochs after the autoencoder pre-training.")
    weight: float = Field(default=0.1, gt=0, description="Weight of the KL clustering loss (IDEC's gamma).")
    tolerance: float = Field(
        default=0.001, ge=0, lt=1, description="Stop when fewer validation assignments than this change."
    )


class ForecastConfig(_Strict):
    window_days: int = Field(
        default=90,
        ge=0,
        le=3650,
        description="Temporal pretext task: a head beside the decoder learns to predict what each customer "
        "did in the last window_days before the snapshot (spend, orders, category, channel and discount "
        "mix) from the features at the start of that window, so the embedding keeps what predicts "
        "behaviour. Both windows precede the snapshot: nothing after it is used. Where no customer has "
        "history before that start, training uses the reconstruction alone (with a warning). 0 = off.",
    )
    weight: float = Field(
        default=0.3, gt=0, description="Weight of the forecast loss beside the reconstruction loss."
    )


class MlflowConfig(_Strict):
    enabled: bool = False
    tracking_uri: str | None = Field(
        default=None,
        description="null = MLFLOW_TRACKING_URI, else a SQLite store (mlflow.db) beside local models.",
    )
    experiment: str = Field(default="seglib", min_length=1)
    registered_model: str | None = Field(
        default=None,
        description="Register each segmentation's pyfunc model under this name (Unity Catalog: "
        "catalog.schema.model) and move `alias` to the new version; null: logged in a run only.",
    )
    alias: str = Field(default="production", min_length=1, description="Alias of the newest segmentation.")


# The names of the registries' entries (seglib.representation.models.MODEL_KINDS and
# seglib.segments.algorithms.ALGORITHMS); tests/contract/test_registries.py keeps them equal.
ModelKindName = Literal["autoencoder", "vae", "idec"]
ClusteringAlgorithmName = Literal["kmeans", "bisecting_kmeans", "gaussian_mixture"]
ClusteringSpace = Literal["reconstruction", "embedding"]


class TrainConfig(_Strict):
    launcher: Literal["horovod", "torch_distributor"] = Field(
        default="horovod", description="horovod.spark.run, or Spark's TorchDistributor (torch.distributed)."
    )
    num_proc: int = Field(
        default=2, ge=1, description="The most training processes (<= free Spark task slots, or GPUs)."
    )
    min_rows_per_worker: int = Field(
        default=250_000,
        ge=0,
        description="Training rows each process must have: below num_proc x this, fewer processes train "
        "(one below 2 x this), because on small data a second rank's per-step gradient exchange costs "
        "more than its arithmetic saves (bench/train_throughput.py). 0 = always num_proc.",
    )
    model: ModelKindName = Field(
        default="autoencoder", description="autoencoder, vae (variational) or idec (joint deep clustering)."
    )
    epochs: int = Field(
        default=100, ge=1, description="At most this many epochs (early stopping may end sooner)."
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="Rows per step on each worker. auto: 64 up to about 23,000 training customers, then "
        "training rows / 256 rounded to a power of two, at most 4096, with learning_rate scaled by "
        "sqrt(batch / 64); a number is used as given, with learning_rate as given.",
    )
    learning_rate: float = Field(
        default=1e-3, gt=0, description="Per worker at a batch of 64 rows; scaled by the training processes."
    )
    warmup_epochs: int = Field(
        default=3, ge=0, description="Ramp from learning_rate to learning_rate x processes over these epochs."
    )
    hidden_dims: list[int] = Field(default_factory=lambda: [64, 32])
    embedding_dim: int = Field(default=8, ge=1)
    members: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = Field(
        default="auto",
        description="Models trained side by side from their own random starts; each customer's embedding "
        "is theirs side by side (members x embedding_dim values), the reconstruction their mean. One "
        "training's latent space is one draw among many and k-means cuts it differently from the next "
        "retrain's: several members give segments that retrains agree on. auto: 4 for autoencoder and "
        "vae, 1 for idec (whose clustering phase fine-tunes one model's centres).",
    )
    activation: Literal["gelu", "relu", "tanh", "elu"] = "gelu"
    batch_norm: bool = False
    dropout: float = Field(default=0.0, ge=0, lt=1)
    corruption: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Denoising: share of inputs masked to 0 in each training batch (0 = plain autoencoder).",
    )
    vae_beta: float = Field(default=1.0, ge=0, description="Weight of the KL term of the vae model.")
    idec: IdecConfig = Field(default_factory=IdecConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=0.5, description="Customers held out for validation loss and early stopping."
    )
    validation_max_rows: int = Field(default=100_000, ge=1)
    patience: int = Field(
        default=10, ge=1, description="Stop after this many epochs without a better validation loss."
    )
    min_delta: float = Field(default=1e-4, ge=0, description="Relative improvement that counts as better.")
    checkpoint_dir: str | None = Field(
        default=None,
        description="Where epoch checkpoints go (local path or URL, e.g. dbfs:/..., hdfs://...); "
        "null = <model_dir>/autoencoder/checkpoints.",
    )
    resume: bool = Field(
        default=True, description="Resume an interrupted run of the same plan from its checkpoint."
    )
    shard_cache_mib: int = Field(
        default=2048,
        ge=0,
        description="Keep a worker's shard in memory after the first pass if it fits; 0 streams.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when a GPU is visible."
    )
    precision: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="auto: bfloat16 autocast on GPUs that have it, float16 with loss scaling on older GPUs, "
        "float32 on CPUs.",
    )
    seed: int = 17
    reader_workers: int = Field(default=2, ge=1, description="Petastorm reader threads per training worker.")
    progress: bool = Field(
        default=True, description="Print one line per epoch with losses, throughput and ETA."
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mixed_precision" in data:
            raise ValueError(
                "train.mixed_precision was replaced by train.precision: auto (bfloat16 on GPUs that have it, "
                "float16 with loss scaling on older GPUs, float32 on CPUs), bfloat16, float16 or float32"
            )
        return data

    @model_validator(mode="after")
    def _one_idec_member(self) -> TrainConfig:
        if self.model == "idec" and self.members not in ("auto", 1):
            raise ValueError(
                f"train.members is {self.members}, but idec fine-tunes the cluster centres of one model: "
                "set train.members to 1 or auto, or train.model to autoencoder or vae"
            )
        return self

    @field_validator("hidden_dims")
    @classmethod
    def _positive_layers(cls, value: list[int]) -> list[int]:
        if any(width < 1 for width in value):
            raise ValueError("train.hidden_dims must hold positive layer widths, for example [64, 32]")
        return value


class SelectionConfig(_Strict):
    """How `cluster.k: auto` picks k: the largest k whose segments are big enough, reproducible and separated."""

    k_min: int = Field(default=2, ge=2, le=1000)
    k_max: int = Field(default=8, ge=2, le=1000)
    min_segment_share: float = Field(
        default=0.03,
        ge=0,
        lt=0.5,
        description="A candidate whose smallest segment is below this share is rejected.",
    )
    min_prediction_strength: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description=(
            "Least prediction strength (the weakest segment's share of customer pairs that a fit on the "
            "other half of the sample also puts together); 0.8 to 0.9 is the usual bar."
        ),
    )
    min_silhouette: float = Field(
        default=0.25,
        ge=-1,
        le=1,
        description="Least silhouette: below 0.25 there is little clustered structure.",
    )
    splits: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Random half-splits of the sample per candidate k (two fits each).",
    )
    min_member_agreement: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        description=(
            "Least agreement (adjusted Rand index) between the segments found on one half of the model's "
            "members and on the other half (train.members > 1, cluster.space embedding); null (default): "
            "reported per candidate, not a bar. As a bar (0.7, 0.8) it made the real-log bench's k choice "
            "flip between retrains more often, not less: the agreement of one k swings between runs."
        ),
    )
    sample_rows: int = Field(
        default=20_000, ge=100, description="Customers sampled (once) to score the candidates."
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> SelectionConfig:
        if self.k_min > self.k_max:
            raise ValueError(
                f"cluster.selection.k_min ({self.k_min}) is above k_max ({self.k_max}); set k_min <= k_max"
            )
        return self


class IdentityConfig(_Strict):
    """Matching a new run's segments to the previous snapshot's, so that ids and names carry over."""

    min_overlap: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Least Jaccard overlap of members (or profile similarity) for a segment to keep an id.",
    )
    min_common_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Below this share of customers in both snapshots, segments are matched by profile instead.",
    )


class SurrogateConfig(_Strict):
    max_depth: int = Field(default=4, ge=1, le=12, description="Depth of the explaining decision tree.")
    rules_per_segment: int = Field(default=2, ge=1, le=10)
    min_instances_per_node: int = Field(default=20, ge=1)


class ClusterConfig(_Strict):
    algorithm: ClusteringAlgorithmName = "kmeans"
    k: int | Literal["auto"] = Field(
        default="auto", description="Number of segments, or auto to choose it over cluster.selection's range."
    )
    space: ClusteringSpace = Field(
        default="embedding",
        description=(
            "What the segments are found in. embedding: the latent vectors, where the autoencoder "
            "untangles groups that are curved or overlapping in feature space (generator benchmark, "
            "overlapping personas: ARI 0.91 against 0.58). reconstruction: the decoder's output, the "
            "customer's scaled features as the model denoises them; its distances do not depend on how a "
            "training happened to orient and stretch its latent space, so retrains agree (real logs: "
            "0.98 and 0.90 between two trainings, against 0.54 and 0.53), at the price of that untangling."
        ),
    )
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    max_iter: int = Field(default=100, ge=1)
    restarts: int = Field(
        default=10, ge=1, le=100, description="Seeded fits; the lowest-cost (highest-likelihood) one is kept."
    )
    seed: int = 23
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    naming_rules: str | None = Field(
        default=None,
        description="YAML file of segment naming rules; null: the built-in seglib/segments/segment_rules.yaml.",
    )
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    novelty_quantile: float = Field(
        default=0.999,
        gt=0.5,
        lt=1,
        description="A customer whose reconstruction error exceeds novelty_factor x this quantile of the "
        "training snapshot's errors is flagged novel instead of being put in a segment.",
    )
    novelty_factor: float = Field(default=2.0, ge=1)

    @field_validator("k")
    @classmethod
    def _k_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 2 <= value <= 1000:
            raise ValueError("cluster.k must be between 2 and 1000, or auto")
        return value


class DriftConfig(_Strict):
    feature_psi_warning: float = Field(
        default=0.25, gt=0, description="Population stability index of a feature that calls for retraining."
    )
    segment_psi_warning: float = Field(
        default=0.2, gt=0, description="Stability index of the segment shares that calls for retraining."
    )
    novel_share_warning: float = Field(default=0.05, gt=0, le=1, description="Share of novel customers.")


class ScoreConfig(_Strict):
    segmentation_snapshot: dt.date | None = Field(
        default=None,
        description="Training snapshot whose model and segments score new data; null: the latest one.",
    )
    model_uri: str | None = Field(
        default=None,
        description="Score with the segmentation an MLflow model was logged from: models:/name@alias, "
        "models:/name/version or runs:/id/segmentation_model (in train.mlflow's tracking store).",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _one_choice(self) -> ScoreConfig:
        if self.model_uri is not None and self.segmentation_snapshot is not None:
            raise ValueError("set score.model_uri or score.segmentation_snapshot, not both")
        if self.model_uri is not None and not self.model_uri.startswith(("models:/", "runs:/")):
            raise ValueError(f"score.model_uri {self.model_uri!r} must start with models:/ or runs:/")
        return self


class LifetimeValueConfig(_Strict):
    enabled: bool = Field(
        default=True,
        description="Fit BG/NBD and Gamma-Gamma at each snapshot and add lifetime value per customer and segment.",
    )
    horizon_days: int = Field(
        default=365, ge=1, le=3650, description="Days ahead over which purchases and spend are predicted."
    )
    fit_sample_customers: int = Field(
        default=200_000,
        ge=1000,
        description="At most this many customers, drawn at random, are fitted on the driver; every customer is "
        "predicted on the executors.",
    )


class ReportConfig(_Strict):
    directory: str | None = Field(
        default=None, description="Where reports go (one folder per snapshot); null: <model_dir>/../reports."
    )
    sample_rows: int = Field(default=3000, ge=100, description="Customers drawn for the 2-D embedding map.")


Stage = Literal["generate", "features", "train", "embed", "cluster", "report"]
PIPELINE_ORDER: tuple[Stage, ...] = ("generate", "features", "train", "embed", "cluster", "report")


class RunConfig(_Strict):
    stages: list[Stage] = Field(
        default_factory=lambda: list(PIPELINE_ORDER),
        description="Stages of `seg run`; drop generate to run on your own tables.",
    )

    @field_validator("stages")
    @classmethod
    def _in_pipeline_order(cls, value: list[Stage]) -> list[Stage]:
        if value != sorted(value, key=PIPELINE_ORDER.index) or len(set(value)) != len(value):
            raise ValueError(f"run.stages must list each stage once, in the order {list(PIPELINE_ORDER)}")
        return value


class SeglibConfig(_Strict):
    spark: SparkConfig = Field(default_factory=SparkConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    clv: LifetimeValueConfig = Field(default_factory=LifetimeValueConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _idec_knows_its_clusters(self) -> SeglibConfig:
        if self.train.model == "idec" and self.train.idec.clusters is None and self.cluster.k == "auto":
            raise ValueError(
                "train.model=idec needs a number of clusters: set train.idec.clusters, or a fixed cluster.k "
                "(cluster.k is auto)"
            )
        return self


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, for example train.epochs=20")
    dotted, raw_value = text.split("=", 1)
    path = [part.strip() for part in dotted.split(".")]
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key; write it as section.key=value")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        # The key only, not the value or YAML's excerpt of it: the value may be a secret.
        raise ConfigError(
            f"override of {dotted.strip()!r}: the value is not valid YAML; quote it, e.g. key='value'"
        ) from None
    return path, value


def _apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


_SECRET_WORDS = re.compile(r"(?i)secret|passw|token|credential|access.?key|account.?key|sas|auth|private")


def shown_value(location: tuple[Any, ...], value: Any) -> str:
    """How an error message may show a rejected value: never the values of spark.conf or of any key
    that sounds like a secret, and URLs with their credentials masked."""
    if tuple(location[:2]) == ("spark", "conf") or any(_SECRET_WORDS.search(str(part)) for part in location):
        return "(value hidden)"
    text = mask_credentials(repr(value))
    return text if len(text) <= 200 else text[:197] + "..."


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {location}: unknown key; check its spelling against conf/default.yaml")
        else:
            lines.append(
                f"  {location}: {problem['msg']} (got {shown_value(problem['loc'], problem.get('input'))})"
            )
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SeglibConfig:
    """Load a YAML config and apply `section.key=value` overrides.

    Without a path the built-in defaults apply; conf/default.yaml spells them out.
    """
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        config_path = Path(path)
        source = str(config_path)
        if not config_path.is_file():
            raise ConfigError(
                f"config file {config_path} does not exist; pass --config with a YAML file from conf/"
            )
        try:
            loaded = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {config_path} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {config_path} must hold a mapping of sections, not {type(loaded).__name__}"
            )
        data = loaded
    for override in overrides or []:
        key_path, value = _parse_override(override)
        _apply_override(data, key_path, value)
    if overrides:
        # The keys only: an override's value may be a secret (spark.conf={fs.s3a.secret.key: ...}).
        source += f" with overrides of {[text.split('=', 1)[0] for text in overrides]}"
    return config_from_mapping(data, source)


def config_from_mapping(data: Mapping[str, Any], source: str = "the config mapping") -> SeglibConfig:
    """A config from nested sections (as YAML would load them), with the messages of `load_config`."""
    try:
        return SeglibConfig.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None
