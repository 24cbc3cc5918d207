"""Customer lifetime value at a snapshot: the RFM summary BG/NBD and Gamma-Gamma need (one Spark
aggregation over the accepted transactions), the models fitted on the driver from a bounded sample, and
every customer's prediction in a pandas UDF. Written as `customer_value` (one row per customer with a
purchase) and `lifetime_value_fit` (the snapshot's parameters), both replaced per snapshot.

Purchases are counted by day, the convention of the published CDNOW results: several orders on one day
are one purchase occasion, and its spend is their sum. Returns are not purchases. Time is in weeks.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from seglib.contract.config import SeglibConfig
from seglib.contract.tables import CUSTOMER_VALUE_TABLE, LIFETIME_VALUE_FIT_TABLE, SNAPSHOT_COLUMN
from seglib.numerics.lifetime_value import (
    BetaGeometricNBD,
    GammaGamma,
    LifetimeValueFitError,
    fit_bgnbd,
    fit_gamma_gamma,
)
from seglib.platform.warehouse import Warehouse

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

DAYS_PER_WEEK = 7.0

CUSTOMER_VALUE_SCHEMA = (
    "customer_id string, repeat_purchases double, purchase_span_weeks double, observed_weeks double, "
    "repeat_spend_mean double, probability_alive double, expected_purchases double, "
    "expected_spend_per_purchase double, expected_spend double"
)
FIT_SCHEMA = (
    "status string, horizon_days int, customers_fitted long, repeat_buyers_fitted long, r double, "
    "alpha double, a double, b double, bgnbd_log_likelihood double, p double, q double, gamma double, "
    "gamma_gamma_log_likelihood double"
)


def purchase_summary(transactions: DataFrame, snapshot: dt.date, cutoff: dt.datetime) -> DataFrame:
    """customer_id, repeat_purchases (purchase days after the first), purchase_span_weeks (first to last
    purchase day), observed_weeks (first purchase day to the snapshot) and repeat_spend_mean (mean spend
    of the repeat purchase days; null without one), for every customer with a purchase before `cutoff`."""
    columns = transactions.columns
    purchase = F.col("amount") >= 0  # a zero-value order is still a purchase occasion
    if "is_return" in columns:
        purchase = purchase & ~F.coalesce(F.col("is_return"), F.lit(False))
    days = (
        transactions.where((F.col("timestamp") < F.lit(cutoff)) & purchase)
        .groupBy("customer_id", F.to_date("timestamp").alias("_day"))
        .agg(F.sum("amount").alias("_spend"))
    )
    per_customer = days.groupBy("customer_id").agg(
        F.count(F.lit(1)).alias("_days"),
        F.min("_day").alias("_first"),
        F.max("_day").alias("_last"),
        F.sum("_spend").alias("_total"),
        F.min_by("_spend", "_day").alias("_first_spend"),
    )
    repeat = F.col("_days") - 1
    return per_customer.select(
        F.col("customer_id").cast("string").alias("customer_id"),
        repeat.cast("double").alias("repeat_purchases"),
        (F.datediff("_last", "_first") / DAYS_PER_WEEK).alias("purchase_span_weeks"),
        (F.datediff(F.lit(snapshot), "_first") / DAYS_PER_WEEK).alias("observed_weeks"),
        F.when(repeat > 0, (F.col("_total") - F.col("_first_spend")) / repeat).alias("repeat_spend_mean"),
    )


@dataclass(frozen=True)
class LifetimeValueFit:
    status: str  # "fitted", or why there is no fit
    purchases: BetaGeometricNBD | None
    spend: GammaGamma | None

    def describe(self) -> str:
        if self.purchases is None:
            return self.status
        text = (
            f"BG/NBD on {self.purchases.customers:,} customers (r {self.purchases.r:.3f}, alpha "
            f"{self.purchases.alpha:.3f}, a {self.purchases.a:.3f}, b {self.purchases.b:.3f})"
        )
        if self.spend is None:
            return f"{text}; {self.status}"
        return (
            f"{text}, Gamma-Gamma on {self.spend.customers:,} repeat buyers (p {self.spend.p:.3f}, q "
            f"{self.spend.q:.3f}, gamma {self.spend.gamma:.3f}; mean spend per purchase "
            f"{self.spend.population_mean:.2f})"
        )

    def row(self, horizon_days: int) -> tuple[object, ...]:
        purchases = self.purchases
        spend = self.spend
        return (
            self.status,
            horizon_days,
            purchases.customers if purchases else None,
            spend.customers if spend else None,
            *(
                (purchases.r, purchases.alpha, purchases.a, purchases.b, purchases.log_likelihood)
                if purchases
                else (None,) * 5
            ),
            *((spend.p, spend.q, spend.gamma, spend.log_likelihood) if spend else (None,) * 4),
        )


def fit_lifetime_value(summary: DataFrame, sample_customers: int, seed: int) -> LifetimeValueFit:
    """Both models fitted on the driver, on at most `sample_customers` customers drawn at random."""
    import numpy as np

    customers = summary.count()
    fraction = min(1.0, sample_customers / max(customers, 1))
    sample = summary if fraction >= 1.0 else summary.sample(fraction=fraction, seed=seed)
    rows = sample.select(
        "repeat_purchases", "purchase_span_weeks", "observed_weeks", "repeat_spend_mean"
    ).collect()
    x, t_x, observed, m = (np.array([row[i] for row in rows], dtype=float) for i in range(4))
    try:
        purchases = fit_bgnbd(x, t_x, observed)
    except LifetimeValueFitError as error:
        return LifetimeValueFit(f"no BG/NBD fit: {error}", None, None)
    try:
        spend = fit_gamma_gamma(x, m)
    except LifetimeValueFitError as error:
        return LifetimeValueFit(f"BG/NBD only, no Gamma-Gamma fit: {error}", purchases, None)
    return LifetimeValueFit("fitted", purchases, spend)


def predict_lifetime_value(
    purchases: dict[str, Any] | None,
    spend: dict[str, Any] | None,
    horizon_weeks: float,
    batches: Iterator[pd.DataFrame],
) -> Iterator[pd.DataFrame]:
    """Executor side: the summary rows with P(alive), expected purchases over the horizon, expected spend
    per purchase and expected spend (nulls where a model is missing)."""
    import numpy as np

    from seglib.numerics.lifetime_value import BetaGeometricNBD, GammaGamma

    purchase_model = BetaGeometricNBD(**purchases) if purchases else None
    spend_model = GammaGamma(**spend) if spend else None
    for batch in batches:
        x = batch["repeat_purchases"].to_numpy(dtype=float)
        t_x = batch["purchase_span_weeks"].to_numpy(dtype=float)
        observed = batch["observed_weeks"].to_numpy(dtype=float)
        missing = np.full(len(batch), np.nan)
        alive = purchase_model.probability_alive(x, t_x, observed) if purchase_model else missing
        expected = (
            purchase_model.expected_purchases(horizon_weeks, x, t_x, observed) if purchase_model else missing
        )
        per_purchase = (
            spend_model.expected_spend_per_purchase(x, batch["repeat_spend_mean"].to_numpy(dtype=float))
            if spend_model
            else missing
        )
        yield batch.assign(
            probability_alive=alive,
            expected_purchases=expected,
            expected_spend_per_purchase=per_purchase,
            expected_spend=expected * per_purchase,
        )


def write_lifetime_value(
    spark: SparkSession,
    warehouse: Warehouse,
    config: SeglibConfig,
    transactions: DataFrame,
    cutoff: dt.datetime,
) -> LifetimeValueFit | None:
    """Fit and predict at the snapshot and replace its rows of `customer_value` and `lifetime_value_fit`.
    With clv.enabled false, the snapshot's rows are removed (a rerun never leaves an earlier run's)."""
    snapshot, database, settings = config.features.snapshot_date, config.storage.database, config.clv
    if not settings.enabled:
        for table, schema in (
            (CUSTOMER_VALUE_TABLE, CUSTOMER_VALUE_SCHEMA),
            (LIFETIME_VALUE_FIT_TABLE, FIT_SCHEMA),
        ):
            if warehouse.exists(database, table):
                empty = spark.createDataFrame([], schema).withColumn(SNAPSHOT_COLUMN, F.lit(snapshot))
                warehouse.write_snapshot(empty, database, table, snapshot)
        return None
    summary = purchase_summary(transactions, snapshot, cutoff).cache()
    try:
        fit = fit_lifetime_value(summary, settings.fit_sample_customers, config.cluster.seed)
        _log_fit(fit, snapshot)
        predict = partial(
            predict_lifetime_value,
            asdict(fit.purchases) if fit.purchases else None,
            asdict(fit.spend) if fit.spend else None,
            settings.horizon_days / DAYS_PER_WEEK,
        )
        values = summary.mapInPandas(predict, CUSTOMER_VALUE_SCHEMA).withColumn(
            SNAPSHOT_COLUMN, F.lit(snapshot)
        )
        warehouse.write_snapshot(values, database, CUSTOMER_VALUE_TABLE, snapshot)
    finally:
        summary.unpersist()
    record = spark.createDataFrame([fit.row(settings.horizon_days)], FIT_SCHEMA)
    warehouse.write_snapshot(
        record.withColumn(SNAPSHOT_COLUMN, F.lit(snapshot)), database, LIFETIME_VALUE_FIT_TABLE, snapshot
    )
    return fit


def _log_fit(fit: LifetimeValueFit, snapshot: dt.date) -> None:
    log.info("lifetime value at snapshot %s: %s", snapshot, fit.describe())
    if fit.status != "fitted":
        log.warning("lifetime value at snapshot %s: %s (its columns stay empty)", snapshot, fit.status)
