"""The vocabulary of features: `FeatureSpec` (what a feature means and how the pipeline treats it),
the settings of a run, column naming, and the Column helpers every feature family uses."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pyspark.sql import Column
from pyspark.sql import functions as F

from seglib.contract.config import validate_identifier
from seglib.inputs.validation import end_of_day

log = logging.getLogger(__name__)

UNKNOWN = "unknown"

Transform = Literal["log1p", "scale", "flag", "one-hot"]
Fill = Literal["zero", "cap", "impute", "none"]


@dataclass(frozen=True)
class FeatureSpec:
    """One raw feature: what it means and how the pipeline treats it.

    fill says what a customer without rows in the source gets: zero (counts, amounts, shares),
    cap (days since: the recency cap), impute (the pipeline's median) or none (always defined).
    """

    name: str
    family: str
    source: str
    transform: Transform
    fill: Fill
    description: str


@dataclass(frozen=True)
class FeatureSettings:
    snapshot: dt.date
    windows_days: tuple[int, ...] = (30, 90, 365)
    trend_window_days: int = 90
    recency_cap_days: float = 730.0
    categories: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    event_types: dict[str, list[str]] = field(default_factory=dict)
    session_gap_minutes: int = 30
    min_rate_support: int = 3
    timezone: str = "UTC"  # the zone whose midnight ends the snapshot day
    # False for a date-only log: its day-part shares would all read "night" and say nothing.
    time_of_day: bool = True

    @property
    def cutoff(self) -> dt.datetime:
        """The first instant after the snapshot day: only rows before it are visible."""
        return end_of_day(self.snapshot, self.timezone)


def slug_column(prefix: str, value: str) -> str:
    """`<prefix>_<value>`; a value that is not already a plain lower-case name gets a hash suffix,
    so that "Home & Garden" and "home_garden" can never collide."""
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")
    digest = hashlib.sha1(value.encode("utf-8")).hexdigest()[:6]
    if slug != value:
        slug = f"{slug}_{digest}".lstrip("_")
    name = f"{prefix}_{slug}"
    if len(name) > 128:
        # Cut the readable part, never the hash: two long values that share their first 128 characters
        # must not become one column.
        name = f"{prefix}_{slug}"[: 128 - len(digest) - 1].rstrip("_") + f"_{digest}"
    return validate_identifier(name, "feature name")


def category_share_column(category: str) -> str:
    return slug_column("share", category)


def channel_share_column(channel: str) -> str:
    return slug_column("channel_share", channel)


SpecMaker = Callable[[str, str, Transform, Fill, str], FeatureSpec]


def spec_maker(source: str) -> SpecMaker:
    """FeatureSpec(name, family, transform, fill, description) for features of one source table."""

    def make(name: str, family: str, transform: Transform, fill: Fill, description: str) -> FeatureSpec:
        return FeatureSpec(name, family, source, transform, fill, description)

    return make


def days_before(moment: Column, snapshot: dt.date) -> Column:
    return F.datediff(F.lit(snapshot), F.to_date(moment)).cast("double")


def safe_ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def supported_ratio(numerator: Column, denominator: Column, support: int) -> Column:
    """A rate only where its denominator reaches `support` (null below: imputed later), because a rate
    over one or two events is 0 or 1 and would set customers apart on noise."""
    return F.when(denominator >= support, numerator / denominator)


def count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, 1).otherwise(0)).cast("double")


def sum_if(condition: Column, value: Column) -> Column:
    return F.sum(F.when(condition, value).otherwise(0.0)).cast("double")


@dataclass(frozen=True)
class FeatureSet:
    """The raw features of a run, in model-input order: scaled numerics, 0/1 flags, one-hot categoricals."""

    numeric: list[FeatureSpec]
    flags: list[FeatureSpec]
    categorical: list[FeatureSpec]

    @property
    def specs(self) -> list[FeatureSpec]:
        return [*self.numeric, *self.flags, *self.categorical]
