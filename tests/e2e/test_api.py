"""The Python API (`seglib.Segmentation`) on DataFrames, in a session whose settings seglib did not choose,
through the same stages as `seg run` and `seg score` (Horovod, Petastorm, Delta)."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from sklearn.metrics import adjusted_rand_score

from seglib import Segmentation
from seglib.contract.errors import ConfigError
from seglib.pipeline import run_pipeline

pytestmark = pytest.mark.slow
# About this file's wall time beside the other test worker: the longest files start first (conftest).
FILE_SECONDS = 130

SNAPSHOT = dt.date(2025, 6, 30)
# A notebook's own settings, unlike seglib's: another time zone, and Spark's default parser policy,
# under which a timestamp the new parser rejects but the legacy one reads fails the whole job.
NOTEBOOK_SETTINGS = {
    "spark.sql.session.timeZone": "America/Los_Angeles",
    "spark.sql.legacy.timeParserPolicy": "EXCEPTION",
}
BAD_TIMESTAMP = "2025-1-5 10:00:00"  # no leading zeros: not "yyyy-MM-dd HH:mm:ss"


def purchase_log(session):
    """Three lifecycle groups of 30 customers, timestamps as text, and one row with a malformed time."""
    rows: list[tuple[str, str, str, float]] = []
    groups = {
        "loyal": ([2, *range(15, 360, 25)], 180.0),  # 15 large purchases a year, the last days ago
        "one_time_lapsed": ([300], 15.0),
        "new": ([4, 12], 40.0),
    }
    for group, (days_ago, amount) in groups.items():
        for index in range(30):
            for days in days_ago:
                moment = dt.datetime.combine(SNAPSHOT, dt.time(12)) - dt.timedelta(days=days + index % 5)
                rows.append((group, f"{group}-{index}", moment.strftime("%Y-%m-%d %H:%M:%S"), amount + index))
    rows.append(("new", "new-0", BAD_TIMESTAMP, 10.0))
    return session.createDataFrame(rows, "group string, card string, paid_at string, total double")


def api_config(tmp_path, database: str) -> dict:
    return {
        "spark": {"shuffle_partitions": 2},
        "storage": {
            "warehouse_dir": str(tmp_path / "warehouse"),
            "model_dir": str(tmp_path / "models"),
            "cache_dir": str(tmp_path / "cache"),
            "database": database,
            # Managed Delta tables with three-level names, as in a Unity Catalog workspace (Spark's own
            # catalog here); the other end-to-end tests use external tables under warehouse_dir.
            "catalog": "spark_catalog",
            "tables": "managed",
        },
        "input": {
            "transactions": {
                "columns": {
                    "customer_id": "card",
                    "timestamp": "paid_at",
                    "amount": "total",
                    **dict.fromkeys(
                        (
                            "transaction_id",
                            "order_id",
                            "quantity",
                            "category",
                            "channel",
                            "discount",
                            "is_return",
                        )
                    ),
                },
                "timestamp_format": "yyyy-MM-dd HH:mm:ss",
            },
        },
        "features": {"snapshot_date": SNAPSHOT.isoformat()},
        # The temporal pretext task over 30 days: the 30 new customers arrived after its cut-off.
        "train": {"epochs": 40, "forecast": {"window_days": 30}},
        # The other end-to-end tests segment the latent embeddings (the default); this one the
        # reconstructions, through the fit and the scoring of a later snapshot.
        "cluster": {"k": 3, "space": "reconstruction"},
        "run": {"stages": ["features", "train", "embed", "cluster"]},
    }


def test_fit_and_transform_on_dataframes_in_a_notebook_session(spark, tmp_path):
    notebook = spark.newSession()
    for key, value in NOTEBOOK_SETTINGS.items():
        notebook.conf.set(key, value)
    log = purchase_log(notebook)
    segmentation = Segmentation(api_config(tmp_path, "seg_api"))

    fitted = segmentation.fit(notebook, log.drop("group"))

    assert {key: notebook.conf.get(key) for key in NOTEBOOK_SETTINGS} == NOTEBOOK_SETTINGS
    for table in (
        "customer_features",
        "forecast_pretext",
        "customer_embeddings",
        "customer_segments",
        "segment_catalog",
    ):
        details = {
            row["col_name"]: row["data_type"]
            for row in notebook.sql(f"DESCRIBE TABLE EXTENDED spark_catalog.seg_api.{table}").collect()
        }
        assert details["Type"] == "MANAGED" and "seglib.created_by=seglib" in details["Table Properties"]
    segments = fitted.segments.join(
        log.select(F.col("card").alias("customer_id"), "group").distinct(), "customer_id"
    )
    rows = segments.select("customer_id", "group", "segment_id", "segment_name").collect()
    assert len(rows) == len({row["customer_id"] for row in rows}) == 90
    assert adjusted_rand_score([row["group"] for row in rows], [row["segment_id"] for row in rows]) > 0.9
    names = {row["group"]: row["segment_name"] for row in rows}
    assert names["one_time_lapsed"] == "One-time buyers, lapsed" and names["new"] == "New customers"
    assert fitted.catalog.count() == 3 and fitted.profiles.where("segment_id = 0").count() > 0
    pretext = notebook.table("spark_catalog.seg_api.forecast_pretext").select("customer_id").collect()
    assert len(pretext) == 60 and not any(row["customer_id"].startswith("new-") for row in pretext)
    run = notebook.table("spark_catalog.seg_api.segmentation_runs").first()
    assert run is not None and run["clustering_space"] == "reconstruction"
    # The malformed time is quarantined with its reason, not a failed job: the API set seglib's parser
    # policy for the call (the notebook's EXCEPTION policy is back in force after it).
    quarantined = fitted.quarantine.collect()
    assert len(quarantined) == 1 and "timestamp" in quarantined[0]["reason"]
    assert (
        BAD_TIMESTAMP in quarantined[0]["row"] and quarantined[0]["source_table"] == "dataframe:transactions"
    )
    # Recency is counted in features.timezone (UTC), not in the notebook's zone: 2 days for the loyal.
    loyal = fitted.features.where("customer_id = 'loyal-0'").select("recency_days").first()
    assert loyal is not None and loyal["recency_days"] == 2

    later = SNAPSHOT + dt.timedelta(days=30)
    scored = segmentation.transform(notebook, log.drop("group"), snapshot_date=later)

    assert scored.scoring is not None and scored.scoring.segmentation_snapshot == SNAPSHOT
    assert scored.scoring.customers == 90
    by_customer = {row["customer_id"]: row["segment_id"] for row in scored.segments.collect()}
    fitted_segments = {row["customer_id"]: row["segment_id"] for row in rows}
    assert by_customer.keys() == fitted_segments.keys() and min(by_customer.values()) >= 0
    # A month without purchases moves no one out of their group's segment.
    assert (
        adjusted_rand_score(list(fitted_segments.values()), [by_customer[c] for c in fitted_segments]) > 0.9
    )
    assert scored.catalog.count() == 3
    # Scoring merged into the managed table: the fitted snapshot's rows are untouched beside the new ones.
    per_snapshot = notebook.table("spark_catalog.seg_api.customer_segments").groupBy("snapshot_date").count()
    assert sorted(tuple(row) for row in per_snapshot.collect()) == [(SNAPSHOT, 90), (later, 90)]
    assert {key: notebook.conf.get(key) for key in NOTEBOOK_SETTINGS} == NOTEBOOK_SETTINGS


def test_a_bad_config_names_the_key_and_dataframes_cannot_be_passed_to_the_generate_stage(spark, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        Segmentation({"train": {"epochs": 0}})
    settings = api_config(tmp_path, "seg_api_refused")
    settings["run"] = {"stages": ["generate", "features"]}
    config = Segmentation(settings).config
    with pytest.raises(ConfigError, match="leave it out when passing DataFrames"):
        run_pipeline(spark, config, {"transactions": purchase_log(spark)})
    assert not spark.catalog.databaseExists("seg_api_refused")
