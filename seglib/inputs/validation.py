"""Row-level checks on the raw tables: bad rows are set aside with a reason, never silently dropped.

Rules run on the canonical columns (see `seglib.inputs`); a rejected row is kept as the original
source row, as JSON, so a user sees exactly what their table held. Rows dated after the snapshot are
no defect: they belong to later snapshots, so they are counted as outside the window and not
quarantined. Every input row ends up accepted, outside the window or in the `quarantine` table, and
the counts per table and reason are logged, so that input rows = accepted + outside + quarantined.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from seglib.contract.uris import quote_identifier

log = logging.getLogger(__name__)

SOURCE_ROW = "_source_row"  # struct of the original columns, carried until validation is done
_REASON = "_reject_reason"

NULL_CUSTOMER = "null customer_id"
BAD_TIMESTAMP = "null or unparseable timestamp"
BAD_AMOUNT = "null, unparseable or non-finite amount"
AFTER_SNAPSHOT = "timestamp after the snapshot"
SIGNUP_AFTER_SNAPSHOT = "signup_date after the snapshot"
DUPLICATE_TRANSACTION = "duplicate transaction_id"
DUPLICATE_CUSTOMER = "duplicate customer_id"
# Reasons that set a row aside without quarantining it: it belongs to a later snapshot.
OUTSIDE_WINDOW = frozenset({AFTER_SNAPSHOT, SIGNUP_AFTER_SNAPSHOT})
# No real amount, quantity, discount, age or attribute comes near this; with every value below it, no
# sum over a table's rows can overflow a double.
MAX_MAGNITUDE = 1e15


def bad_number_reason(role: str) -> str:
    return f"non-finite or out-of-range {role} (NaN, infinite or beyond +/-1e15)"


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
    first_ts: dt.datetime | None = None  # over every row with a timestamp, accepted or not
    last_ts: dt.datetime | None = None
    # Their days in the session's time zone, computed by Spark: a collected timestamp is rendered in
    # the Python process's local zone, which need not be the business's.
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    # Whether any timestamp has a time of day; a date-only log (every row at midnight) has none.
    has_time_of_day: bool = True

    @property
    def input_rows(self) -> int:
        return sum(self.counts.values())

    @property
    def outside_window(self) -> int:
        return outside_window_rows(self.counts)


def outside_window_rows(counts: dict[str, int]) -> int:
    """Rows of later snapshots among a table's counts."""
    return sum(count for reason, count in counts.items() if reason in OUTSIDE_WINDOW)


def defects(counts: dict[str, int]) -> dict[str, int]:
    """The counts of the reasons that quarantine a row (neither accepted nor outside the window)."""
    return {
        reason: count
        for reason, count in counts.items()
        if reason != "accepted" and reason not in OUTSIDE_WINDOW
    }


def quarantined_rows(counts: dict[str, int]) -> int:
    """Rows with a defect among a table's counts (the rows its quarantine holds)."""
    return sum(defects(counts).values())


def is_not_finite(column: Column) -> Column:
    return column.isNull() | F.isnan(column) | (F.abs(column) == F.lit(float("inf")))


def is_bad_number(column: Column) -> Column:
    """NaN, infinite or beyond MAX_MAGNITUDE; a null (a missing optional value) is fine."""
    return F.coalesce(F.isnan(column) | (F.abs(column) > F.lit(MAX_MAGNITUDE)), F.lit(False))


def number_rules(columns: list[str], roles: tuple[str, ...]) -> list[RowRule]:
    return [RowRule(bad_number_reason(role), is_bad_number(F.col(role))) for role in roles if role in columns]


def later_duplicate(key: str, order: list[str]) -> Column:
    """True for every row after the first of its `key` (first by `order`, deterministic)."""
    window = Window.partitionBy(key).orderBy(*[F.col(name).asc_nulls_last() for name in order or [key]])
    return F.col(key).isNotNull() & (F.row_number().over(window) > 1)


def end_of_day(day: dt.date, timezone: str = "UTC") -> dt.datetime:
    """Rows strictly before midnight after `day`, in `timezone`, belong to it.

    An aware datetime: PySpark turns a naive one into an instant through the Python process's local
    time zone (time.mktime), which moved the cut-off by the machine's UTC offset.
    """
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=ZoneInfo(timezone))


def transaction_rules(columns: list[str], snapshot: dt.date, timezone: str = "UTC") -> list[RowRule]:
    rules = [
        RowRule(NULL_CUSTOMER, F.col("customer_id").isNull()),
        RowRule(BAD_TIMESTAMP, F.col("timestamp").isNull()),
        RowRule(BAD_AMOUNT, is_not_finite(F.col("amount"))),
        *number_rules(columns, ("amount", "quantity", "discount")),
        RowRule(AFTER_SNAPSHOT, F.col("timestamp") >= F.lit(end_of_day(snapshot, timezone))),
    ]
    if "transaction_id" in columns:
        order = ["timestamp", "customer_id", "amount"]
        rules.append(RowRule(DUPLICATE_TRANSACTION, later_duplicate("transaction_id", order)))
    return rules


def event_rules(columns: list[str], snapshot: dt.date, timezone: str = "UTC") -> list[RowRule]:
    return [
        RowRule(NULL_CUSTOMER, F.col("customer_id").isNull()),
        RowRule(BAD_TIMESTAMP, F.col("timestamp").isNull()),
        RowRule(AFTER_SNAPSHOT, F.col("timestamp") >= F.lit(end_of_day(snapshot, timezone))),
    ]


def customer_rules(
    columns: list[str], snapshot: dt.date, numeric_columns: tuple[str, ...] = ()
) -> list[RowRule]:
    """`numeric_columns`: the numeric attributes (canonical `attr_<name>`) besides age."""
    rules = [
        RowRule(NULL_CUSTOMER, F.col("customer_id").isNull()),
        *number_rules(columns, ("age", *numeric_columns)),
        RowRule(
            DUPLICATE_CUSTOMER,
            later_duplicate("customer_id", [c for c in columns if c not in ("customer_id", SOURCE_ROW)]),
        ),
    ]
    if "signup_date" in columns:
        rules.append(RowRule(SIGNUP_AFTER_SNAPSHOT, F.col("signup_date") > F.lit(snapshot)))
    return rules


def _rejected_rows(labelled: DataFrame, columns: list[str], name: str) -> DataFrame:
    """The rejected rows as quarantine rows: source table, reason and the original row as JSON."""
    source = (
        F.col(SOURCE_ROW)
        if SOURCE_ROW in columns
        else F.struct(*[F.col(quote_identifier(c)) for c in columns])
    )
    defect = F.col(_REASON).isNotNull() & ~F.col(_REASON).isin(*sorted(OUTSIDE_WINDOW))
    return labelled.where(defect).select(
        F.lit(name).alias("source_table"),
        F.col(_REASON).alias("reason"),
        F.to_json(source).alias("row"),
    )


def validate_rows(
    df: DataFrame, name: str, rules: list[RowRule], time_column: str | None = None
) -> ValidatedTable:
    """Label each row with the first rule it breaks; split into accepted and rejected rows.

    One pass over the table counts the rows per reason (and, with `time_column`, finds the first and
    last timestamp), so range checks need no extra scan.
    """
    reason = F.coalesce(*[F.when(rule.rejects, F.lit(rule.reason)) for rule in rules])
    # Not cached: Spark's cache of a wide table with the original-row struct ran a 1g executor out of
    # heap at 10M rows, while recomputing from the (columnar, pruned) source is cheap and bounded.
    labelled = df.withColumn(_REASON, reason)
    time_aggregates = (
        [
            F.min(time_column).alias("_first"),
            F.max(time_column).alias("_last"),
            F.to_date(F.min(time_column)).alias("_first_day"),
            F.to_date(F.max(time_column)).alias("_last_day"),
            F.max((F.col(time_column) != F.date_trunc("day", time_column)).cast("int")).alias("_timed"),
        ]
        if time_column
        else []
    )
    tally = labelled.groupBy(_REASON).agg(F.count(F.lit(1)).alias("count"), *time_aggregates).collect()
    counts = {row[_REASON] or "accepted": int(row["count"]) for row in tally}
    counts.setdefault("accepted", 0)

    def present(column: str) -> list[Any]:
        return [row[column] for row in tally if time_column and row[column] is not None]

    firsts, lasts, first_days, last_days = (
        present(c) for c in ("_first", "_last", "_first_day", "_last_day")
    )
    rejected = _rejected_rows(labelled, df.columns, name)
    accepted = labelled.where(F.col(_REASON).isNull()).drop(_REASON, SOURCE_ROW)
    problems = defects(counts)
    summary = (
        f"{name}: {sum(counts.values())} input rows = {counts['accepted']} accepted + "
        f"{outside_window_rows(counts)} after the snapshot (outside its window) + {sum(problems.values())} quarantined"
    )
    if problems:
        log.warning("%s %s", summary, problems)
    else:
        log.info("%s", summary)
    return ValidatedTable(
        name=name,
        accepted=accepted,
        rejected=rejected,
        counts=counts,
        first_ts=min(firsts) if firsts else None,
        last_ts=max(lasts) if lasts else None,
        first_day=min(first_days) if first_days else None,
        last_day=max(last_days) if last_days else None,
        has_time_of_day=not time_column or any(row["_timed"] for row in tally if row["_timed"] is not None),
    )
