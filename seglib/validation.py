"""Row-level checks on the raw tables: bad rows are set aside with a reason, never silently dropped.

Every input row ends up either accepted (fed to the features) or in the `quarantine` table, and the
counts per table and reason are logged, so that input rows = accepted + quarantined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

QUARANTINE_TABLE = "quarantine"
_REASON = "_reject_reason"


@dataclass(frozen=True)
class RowRule:
    reason: str
    rejects: Column  # true for rows that break the rule


@dataclass(frozen=True)
class ValidatedTable:
    name: str
    accepted: DataFrame
    rejected: DataFrame  # source_table, reason, row (the original row as JSON)
    counts: dict[str, int]  # "accepted" and one entry per reason

    @property
    def input_rows(self) -> int:
        return sum(self.counts.values())


def is_not_finite(column: Column) -> Column:
    return column.isNull() | F.isnan(column) | (F.abs(column) == F.lit(float("inf")))


def first_of_duplicates(key: str, order: list[str]) -> Column:
    """True for every row after the first of its `key` (first by `order`, deterministic)."""
    window = Window.partitionBy(key).orderBy(*[F.col(name).asc_nulls_last() for name in order])
    return F.col(key).isNotNull() & (F.row_number().over(window) > 1)


def transaction_rules() -> list[RowRule]:
    return [
        RowRule("null customer_id", F.col("customer_id").isNull()),
        RowRule("null or unparseable transaction_ts", F.col("transaction_ts").isNull()),
        RowRule("null or non-finite amount", is_not_finite(F.col("amount").cast("double"))),
        RowRule(
            "duplicate transaction_id",
            first_of_duplicates("transaction_id", ["transaction_ts", "customer_id", "amount"]),
        ),
    ]


def event_rules() -> list[RowRule]:
    return [
        RowRule("null customer_id", F.col("customer_id").isNull()),
        RowRule("null or unparseable event_ts", F.col("event_ts").isNull()),
    ]


def customer_rules() -> list[RowRule]:
    return [
        RowRule("null customer_id", F.col("customer_id").isNull()),
        RowRule(
            "duplicate customer_id", first_of_duplicates("customer_id", ["signup_date", "age", "region"])
        ),
    ]


def validate_rows(df: DataFrame, name: str, rules: list[RowRule]) -> ValidatedTable:
    """Label each row with the first rule it breaks; split into accepted and rejected rows."""
    reason = F.coalesce(*[F.when(rule.rejects, F.lit(rule.reason)) for rule in rules])
    labelled = df.withColumn(_REASON, reason)
    tally = labelled.groupBy(_REASON).count().collect()  # one row per reason: small
    counts = {row[_REASON] or "accepted": int(row["count"]) for row in tally}
    counts.setdefault("accepted", 0)
    rejected = labelled.where(F.col(_REASON).isNotNull()).select(
        F.lit(name).alias("source_table"),
        F.col(_REASON).alias("reason"),
        F.to_json(F.struct(*[F.col(f"`{column}`") for column in df.columns])).alias("row"),
    )
    accepted = labelled.where(F.col(_REASON).isNull()).drop(_REASON)
    problems = {reason: count for reason, count in counts.items() if reason != "accepted"}
    if problems:
        log.warning(
            "%s: %d input rows, %d accepted, %d quarantined %s",
            name, sum(counts.values()), counts["accepted"], sum(problems.values()), problems,
        )  # fmt: skip
    else:
        log.info("%s: all %d input rows accepted", name, counts["accepted"])
    return ValidatedTable(name=name, accepted=accepted, rejected=rejected, counts=counts)
