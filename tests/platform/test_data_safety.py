"""seglib never writes to, overwrites or drops what it did not create, and never corrupts what it reads.

Each test here failed on the main of 2026-12-02 (issue 15): the generator overwrote real input, the
catalog helper dropped tables of the same name, cut-offs moved with the machine's time zone, and so on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pyspark.sql import Row

from seglib.cli import main
from seglib.contract.artifacts import Artifacts
from seglib.contract.config import load_config, validate_identifier
from seglib.contract.errors import ConfigError, InputDataError, UnsafeWriteError
from seglib.contract.tables import FEATURES_TABLE
from seglib.contract.uris import mask_credentials, parent_uri
from seglib.features.spec import slug_column
from seglib.features.stage import features
from seglib.inputs.sources import canonical_frame
from seglib.inputs.validation import (
    BAD_AMOUNT,
    bad_number_reason,
    transaction_rules,
    validate_rows,
)
from seglib.platform.files import HadoopFiles
from seglib.platform.ownership import MARKER
from seglib.platform.warehouse import Warehouse, retry_concurrent_commits
from seglib.reporting.page import render_html
from tests.conftest import suite_overrides

REPO = Path(__file__).resolve().parents[2]
DAY_1 = dt.date(2025, 1, 31)
DAY_2 = dt.date(2025, 2, 28)
BARE_COLUMNS = (
    "input.transactions.columns={customer_id: card, timestamp: bought, amount: total, transaction_id: null, "
    "order_id: null, quantity: null, category: null, channel: null, discount: null, is_return: null}"
)


def one_real_row(spark):
    return spark.createDataFrame(
        [("real-card", "2025-06-01 10:00:00", 12.5)], "card string, bought string, total double"
    )


def snapshot_rows(spark, snapshot, values):
    return spark.createDataFrame(
        [(index, value, snapshot) for index, value in enumerate(values)],
        "customer_id long, value double, snapshot_date date",
    )


# ---------------------------------------------------------------------------------------------
# seg generate and seg run never overwrite real input


@pytest.mark.parametrize("kind", ["parquet", "csv", "delta", "table"])
def test_generate_and_run_refuse_to_overwrite_real_input_and_exit_2(spark, tmp_path, capsys, kind):
    name = f"seg_safe_{kind}"
    if kind == "table":
        shop = f"{name}_shop"
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {shop} LOCATION '{tmp_path / 'shop'}'")
        one_real_row(spark).write.format("delta").saveAsTable(f"{shop}.sales")  # a managed table
        source = f"input.transactions.source={{format: table, name: {shop}.sales}}"

        def real_rows():
            return spark.table(f"{shop}.sales").collect()
    else:
        folder = tmp_path / f"real_{kind}"
        writer = one_real_row(spark).write.format(kind)
        (writer.option("header", "true") if kind == "csv" else writer).save(str(folder))
        source = f"input.transactions.source={{format: {kind}, path: '{folder}'}}"

        def real_rows():
            reader = spark.read.format(kind)
            return (reader.option("header", "true") if kind == "csv" else reader).load(str(folder)).collect()

    before = real_rows()
    overrides = suite_overrides(
        tmp_path,
        name,
        source,
        BARE_COLUMNS,
        "input.customers=null",
        "input.events=null",
        "generate.customers=20",
    )
    for command in ("generate", "run"):
        assert main([command, *[part for value in overrides for part in ("--set", value)]]) == 2
        error = capsys.readouterr().err
        assert f"seg {command}: error: seg generate writes synthetic data where input: reads" in error
        assert "seglib did not create" in error and "remove generate from run.stages" in error
        assert real_rows() == before
    # Checked before anything was written: not even the truth table exists.
    assert not (tmp_path / "warehouse" / f"{name}_raw.db" / "persona_truth").exists()


def test_generate_rewrites_files_it_wrote_itself(spark, make_config, tmp_path):
    from seglib.synthetic.generator import generate

    folder = tmp_path / "generated_csv"
    config = make_config(
        f"input.transactions.source={{format: csv, path: '{folder}'}}",
        "input.customers=null",
        "input.events=null",
        "generate.customers=20",
    )
    first = generate(spark, config)
    assert (folder / MARKER).is_file()
    second = generate(spark, config)  # its own files: rewritten, not refused
    assert first == second and (folder / MARKER).is_file()


def test_an_empty_folder_made_ready_for_seglib_may_be_written(spark, make_config, tmp_path):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    empty = Path(warehouse.location(config.storage.database, "scores").removeprefix("file:"))
    empty.mkdir(parents=True)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), config.storage.database, "scores", DAY_1)
    assert (empty / MARKER).is_file()


# ---------------------------------------------------------------------------------------------
# The catalog: only seglib's own entries are re-pointed; nothing is dropped that seglib did not make


def test_a_managed_table_of_the_same_name_is_never_written_or_dropped(spark, make_config):
    config = make_config()
    database = config.storage.database
    warehouse = Warehouse.from_config(spark, config)
    # spark.sql.warehouse.dir is storage.warehouse_dir: the managed table sits at seglib's own path.
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database} LOCATION '{warehouse.root}/{database}.db'")
    spark.sql(
        f"CREATE TABLE {database}.scores (customer_id long, value double, snapshot_date date) USING delta"
    )
    spark.sql(f"INSERT INTO {database}.scores VALUES (42, 4.2, DATE'{DAY_1}')")
    assert spark.catalog.getTable(f"{database}.scores").tableType == "MANAGED"
    with pytest.raises(
        UnsafeWriteError, match=rf"{database}\.scores is already in the Spark catalog as a managed table"
    ):
        warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "scores", DAY_1)
    assert [tuple(row) for row in spark.table(f"{database}.scores").collect()] == [(42, 4.2, DAY_1)]


def test_an_external_table_not_made_by_seglib_keeps_its_entry_and_data(spark, make_config, tmp_path):
    config = make_config("storage.format=parquet")
    database = config.storage.database
    elsewhere = tmp_path / "their_scores"
    snapshot_rows(spark, DAY_1, [9.0]).write.parquet(str(elsewhere))
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    spark.sql(f"CREATE TABLE {database}.scores USING parquet LOCATION '{elsewhere}'")
    warehouse = Warehouse.from_config(spark, config)
    with pytest.raises(UnsafeWriteError, match="that seglib did not create"):
        warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "scores", DAY_1)
    with pytest.raises(UnsafeWriteError):  # nor re-pointed for reading
        warehouse.register(database, "scores")
    entry = warehouse.catalog_entry(database, "scores")
    assert entry is not None and entry.location.endswith("their_scores")
    assert [row["value"] for row in spark.table(f"{database}.scores").collect()] == [9.0]


def test_a_folder_with_data_seglib_did_not_write_is_refused(spark, make_config):
    config = make_config("storage.format=parquet")
    warehouse = Warehouse.from_config(spark, config)
    location = warehouse.location(config.storage.database, "customer_segments")
    snapshot_rows(spark, DAY_1, [5.0]).write.parquet(location)
    with pytest.raises(UnsafeWriteError, match=f"no {MARKER} marker"):
        warehouse.write_snapshot(
            snapshot_rows(spark, DAY_1, [1.0]), config.storage.database, "customer_segments", DAY_1
        )
    assert [row["value"] for row in spark.read.parquet(location).collect()] == [5.0]


@pytest.mark.parametrize("table_format", ["delta", "parquet"])
def test_two_configs_sharing_one_catalog_each_keep_their_rows(spark, make_config, tmp_path, table_format):
    first = make_config(f"storage.format={table_format}")
    database = first.storage.database
    second = first.model_copy(
        update={"storage": first.storage.model_copy(update={"warehouse_dir": str(tmp_path / "other")})}
    )
    one, two = Warehouse.from_config(spark, first), Warehouse.from_config(spark, second)
    one.write_snapshot(snapshot_rows(spark, DAY_1, [1.0]), database, "scores", DAY_1)
    two.write_snapshot(snapshot_rows(spark, DAY_1, [2.0, 3.0]), database, "scores", DAY_1)
    assert sorted(row["value"] for row in spark.table(f"{database}.scores").collect()) == [2.0, 3.0]
    # The first configuration's folder still holds its own rows, and it takes the name back.
    reader = spark.read.format(table_format)
    assert [row["value"] for row in reader.load(one.location(database, "scores")).collect()] == [1.0]
    one.write_snapshot(snapshot_rows(spark, DAY_2, [4.0]), database, "scores", DAY_2)
    assert sorted(row["value"] for row in spark.table(f"{database}.scores").collect()) == [1.0, 4.0]


# ---------------------------------------------------------------------------------------------
# Time zones: the snapshot cut-off is exact whatever the process's TZ

CUTOFF_SCRIPT = """
import json, os, sys, time
from seglib.contract.config import load_config
from seglib.features.stage import features
from seglib.platform.session import open_session
output, zones, overrides = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
results = {}
spark = None
for number, zone in enumerate(zones):
    os.environ["TZ"] = zone
    time.tzset()  # the Python process's local time zone, which time.mktime follows
    config = load_config(None, [*overrides, f"storage.database=seg_tz_{number}"])
    spark = spark or open_session(config)
    result = features(spark, config)
    database = config.storage.database
    rows = spark.table(f"{database}.customer_features").select("customer_id", "frequency").collect()
    reasons = [row["reason"] for row in spark.table(f"{database}.quarantine").collect()]
    (counts,) = result.input_counts.values()
    results[zone] = {"frequency": {r["customer_id"]: r["frequency"] for r in rows}, "quarantined": reasons,
                     "after_snapshot": counts.get("timestamp after the snapshot", 0)}
json.dump(results, open(output, "w"))
"""


def test_the_snapshot_cut_off_does_not_move_with_the_process_time_zone(tmp_path):
    source = tmp_path / "tills"
    source.mkdir()
    (source / "export.csv").write_text(
        "card,bought,total\n"
        "c1,2025-12-01 10:00:00,5\nc1,2025-12-31 23:30:00,5\n"  # the last half hour of the snapshot day
        "c2,2025-12-01 10:00:00,5\nc2,2026-01-01 00:30:00,5\n"  # the first half hour after it
    )
    script = tmp_path / "cutoff.py"
    script.write_text(CUTOFF_SCRIPT)
    output = tmp_path / "result.json"
    overrides = suite_overrides(
        tmp_path, "seg_tz", BARE_COLUMNS, "input.customers=null", "input.events=null",
        f"input.transactions.source={{format: csv, path: '{source}'}}", "features.snapshot_date=2025-12-31",
    )  # fmt: skip
    # Behind UTC (the cut-off moved later: next-day rows entered) and ahead of it (the snapshot day's
    # last hour was quarantined).
    zones = ["America/New_York", "Europe/Berlin"]
    completed = subprocess.run(
        [sys.executable, str(script), str(output), ",".join(zones), *overrides],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The row after the snapshot is counted outside the window, not quarantined (it is no defect).
    expected = {"frequency": {"c1": 2.0, "c2": 1.0}, "quarantined": [], "after_snapshot": 1}
    assert json.loads(output.read_text()) == dict.fromkeys(zones, expected)


def test_business_days_follow_features_timezone(spark, make_config, tmp_path):
    folder = tmp_path / "instants"
    # 03:00 UTC on 1 January is 22:00 on 31 December in New York.
    spark.sql(
        "SELECT 'c1' AS card, TIMESTAMP'2025-12-20 15:00:00' AS bought, 5.0 AS total UNION ALL "
        "SELECT 'c1', TIMESTAMP'2026-01-01 03:00:00', 7.0"
    ).write.parquet(str(folder))
    common = (BARE_COLUMNS, "input.customers=null", "input.events=null", "features.snapshot_date=2025-12-31",
              f"input.transactions.source={{format: parquet, path: '{folder}'}}")  # fmt: skip
    utc = make_config(*common)
    features(spark, utc)
    row = spark.table(f"{utc.storage.database}.{FEATURES_TABLE}").first()
    assert (row["frequency"], row["monetary_total"]) == (1.0, 5.0)
    new_york = make_config(*common, "features.timezone=America/New_York")
    features(spark, new_york)
    row = spark.table(f"{new_york.storage.database}.{FEATURES_TABLE}").first()
    assert (row["frequency"], row["monetary_total"], row["recency_days"]) == (2.0, 12.0, 0.0)
    assert row["daypart_evening_share"] == 0.5  # 22:00 local; the other purchase at 10:00 local
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"  # restored after the stage
    with pytest.raises(ConfigError, match=r"features\.timezone .Mars/Olympus. is not a known IANA time zone"):
        load_config(None, ["features.timezone=Mars/Olympus"])


# ---------------------------------------------------------------------------------------------
# Values that would poison a feature are quarantined; a table with nothing accepted stops clearly


def test_non_finite_and_huge_values_outside_amount_are_quarantined(spark, make_config, tmp_path):
    folder = tmp_path / "lines"
    folder.mkdir()
    (folder / "lines.csv").write_text(
        "card,bought,total,items,rebate\n"
        "c1,2025-06-01 10:00:00,10,1,0\nc1,2025-06-02 10:00:00,10,NaN,0\n"
        "c2,2025-06-01 10:00:00,20,2,Infinity\nc2,2025-06-03 10:00:00,1e300,1,0\n"
        "c3,2025-06-01 10:00:00,30,3,0\n"
    )
    customers = tmp_path / "people"
    customers.mkdir()
    (customers / "people.csv").write_text("card,age,limit\nc1,30,100\nc2,NaN,200\nc3,40,Infinity\n")
    config = make_config(
        "input.transactions.columns={customer_id: card, timestamp: bought, amount: total, quantity: items, "
        "discount: rebate, transaction_id: null, order_id: null, category: null, channel: null, is_return: null}",
        f"input.transactions.source={{format: csv, path: '{folder}'}}",
        f"input.customers={{source: {{format: csv, path: '{customers}'}}, numeric_attributes: [limit], "
        "columns: {customer_id: card, age: age, signup_date: null, gender: null, region: null}}",
        "input.events=null",
        "features.snapshot_date=2025-06-30",
    )
    result = features(spark, config)
    database = config.storage.database
    reasons = sorted(row["reason"] for row in spark.table(f"{database}.quarantine").collect())
    assert reasons == sorted(
        [bad_number_reason("quantity"), bad_number_reason("discount"), bad_number_reason("amount"),
         bad_number_reason("age"), bad_number_reason("attr_limit")]
    )  # fmt: skip
    assert sum(sum(counts.values()) for counts in result.input_counts.values()) == 8
    rows = {
        row["customer_id"]: row["features"] for row in spark.table(f"{database}.{FEATURES_TABLE}").collect()
    }
    # c2 has no row left: both its purchases and its customer row were quarantined.
    assert sorted(rows) == ["c1", "c3"]
    assert all(math.isfinite(value) for vector in rows.values() for value in vector)


def test_a_table_whose_every_row_is_quarantined_stops_with_the_table_and_keeps_the_rows(
    spark, make_config, tmp_path
):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.csv").write_text("card,bought,total\nc1,2025-06-01 10:00:00,\nc2,2025-06-02 10:00:00,abc\n")
    config = make_config(
        BARE_COLUMNS, "input.customers=null", "input.events=null", "features.snapshot_date=2025-06-30",
        f"input.transactions.source={{format: csv, path: '{folder}'}}",
    )  # fmt: skip
    with pytest.raises(
        InputDataError, match=rf"table csv:{folder} \(transactions\): not one of its 2 rows was accepted"
    ):
        features(spark, config)
    kept = spark.table(f"{config.storage.database}.quarantine").collect()
    assert sorted(row["reason"] for row in kept) == [BAD_AMOUNT, BAD_AMOUNT]


# ---------------------------------------------------------------------------------------------
# Table writes


def test_an_empty_parquet_snapshot_rewrite_removes_the_old_rows(spark, make_config):
    config = make_config("storage.format=parquet")
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.0, 2.0]), database, "quarantine_like", DAY_1)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_2, [3.0]), database, "quarantine_like", DAY_2)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, []), database, "quarantine_like", DAY_1)
    rows = spark.table(f"{database}.quarantine_like").collect()
    assert [(row["snapshot_date"], row["value"]) for row in rows] == [(DAY_2, 3.0)]


def test_two_jobs_writing_different_snapshots_of_one_table_both_succeed(spark, make_config):
    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [0.0]), database, "scores", DAY_1)
    errors: list[BaseException] = []

    def rewrite(snapshot: dt.date, value: float) -> None:
        try:
            for round_ in range(3):
                warehouse.write_snapshot(
                    snapshot_rows(spark, snapshot, [value + round_] * 3), database, "scores", snapshot
                )
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=rewrite, args=(day, value)) for day, value in ((DAY_1, 10.0), (DAY_2, 20.0))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rows = spark.sql(
        f"SELECT snapshot_date, count(*) AS n, min(value) AS v FROM {database}.scores GROUP BY 1 ORDER BY 1"
    ).collect()
    assert [tuple(row) for row in rows] == [(DAY_1, 3, 12.0), (DAY_2, 3, 22.0)]


def test_a_score_merge_racing_a_snapshot_rewrite_both_commit(spark, make_config):
    from seglib.contract.tables import SEGMENTS_TABLE
    from seglib.serving.scoring import upsert_segments

    config = make_config()
    warehouse = Warehouse.from_config(spark, config)
    database = config.storage.database
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [0.0, 0.0]), database, SEGMENTS_TABLE, DAY_1)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_2, [0.0]), database, SEGMENTS_TABLE, DAY_2)
    errors: list[BaseException] = []

    def run(action) -> None:
        try:
            for round_ in range(3):
                action(round_)
        except BaseException as error:
            errors.append(error)

    merge = threading.Thread(
        target=run,
        args=(
            lambda r: upsert_segments(
                warehouse, config.storage.database, snapshot_rows(spark, DAY_1, [5.0 + r]), DAY_1
            ),
        ),
    )
    rewrite = threading.Thread(
        target=run,
        args=(
            lambda r: warehouse.write_snapshot(
                snapshot_rows(spark, DAY_2, [7.0 + r] * 2), database, SEGMENTS_TABLE, DAY_2
            ),
        ),
    )
    merge.start(), rewrite.start()
    merge.join(), rewrite.join()
    assert not errors, errors
    rows = spark.sql(
        f"SELECT snapshot_date, customer_id, value FROM {database}.{SEGMENTS_TABLE} ORDER BY 1, 2"
    ).collect()
    # The merge left exactly the scored customer (customer 1 of DAY_1 is no longer scored: deleted).
    assert [tuple(row) for row in rows] == [(DAY_1, 0, 7.0), (DAY_2, 0, 9.0), (DAY_2, 1, 9.0)]


def test_a_lost_commit_race_is_tried_again_and_other_errors_are_not():
    attempts: list[int] = []

    def conflicted_twice() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("[DELTA_CONCURRENT_APPEND] io.delta.exceptions.ConcurrentAppendException: ...")
        return "committed"

    assert retry_concurrent_commits(conflicted_twice, "test write") == "committed" and len(attempts) == 3

    def broken() -> None:
        attempts.append(1)
        raise ValueError("schema mismatch")

    attempts.clear()
    with pytest.raises(ValueError, match="schema mismatch"):
        retry_concurrent_commits(broken, "test write")
    assert len(attempts) == 1


def test_a_warehouse_url_with_a_quote_and_a_backslash_reaches_sql_as_one_string(spark, make_config, tmp_path):
    odd = tmp_path / "it's a \\ folder"
    config = make_config(f"storage.warehouse_dir='file://{odd}'".replace("'s", "''s"))
    assert config.storage.warehouse_dir == f"file://{odd}"
    warehouse = Warehouse.from_config(spark, config)
    warehouse.write_snapshot(snapshot_rows(spark, DAY_1, [1.5]), config.storage.database, "scores", DAY_1)
    assert [row["value"] for row in spark.table(f"{config.storage.database}.scores").collect()] == [1.5]


# ---------------------------------------------------------------------------------------------
# Files written in place: the pointer to the latest model is never missing


def test_a_rewritten_file_is_never_missing_and_concurrent_writers_never_clash(spark, tmp_path):
    pointer = (tmp_path / "LATEST").as_uri()
    HadoopFiles(spark).write_text(pointer, "v0")
    missing: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if not HadoopFiles(spark).exists(pointer):
                missing.append(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    errors: list[BaseException] = []

    def write_many(name: str) -> None:
        try:
            for index in range(60):
                HadoopFiles(spark).write_text(pointer, f"{name}-{index}")
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=write_many, args=(name,)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    watcher.join()
    assert not errors, errors
    assert not missing
    assert HadoopFiles(spark).read_text(pointer) in {"a-59", "b-59"}
    assert not [path.name for path in tmp_path.iterdir() if ".tmp" in path.name]  # no temporary file left


# ---------------------------------------------------------------------------------------------
# Smaller items


def test_an_identifier_with_a_trailing_newline_is_rejected():
    with pytest.raises(ValueError, match="not a valid identifier"):
        validate_identifier("seg\n", "storage.database")
    with pytest.raises(ConfigError, match=r"storage\.database"):
        load_config(None, ['storage.database="seg\\n"'])


def test_a_source_column_with_a_backtick_is_read_and_kept_in_the_quarantine(spark):
    frame = spark.createDataFrame(
        [("c1", "2025-06-01 10:00:00", "x", "note 1"), (None, "2025-06-01 10:00:00", "1", "note 2")],
        "card string, bought string, total string, `odd``name` string",
    )
    canonical = canonical_frame(
        frame,
        "shop.sales",
        "transactions",
        {"customer_id": "card", "timestamp": "bought", "amount": "total"},
        None,
    )
    result = validate_rows(canonical, "shop.sales", transaction_rules(canonical.columns, DAY_2), "timestamp")
    kept = {json.loads(row["row"])["odd`name"]: row["reason"] for row in result.rejected.collect()}
    assert kept == {"note 1": BAD_AMOUNT, "note 2": "null customer_id"}


def test_long_category_values_never_collide_after_truncation():
    long_value = "a" * 200
    names = {
        slug_column("share", long_value),
        slug_column("share", long_value + "b"),
        slug_column("share", "A" * 200),
    }
    assert len(names) == 3 and all(len(name) <= 128 for name in names)
    assert slug_column("share", "home") == "share_home"  # short plain names are unchanged


def test_seg_sql_is_read_only_unless_writes_are_allowed(spark, make_config, capsys):
    config = make_config()
    database = config.storage.database
    Warehouse.from_config(spark, config).write_snapshot(
        snapshot_rows(spark, DAY_1, [1.0]), database, "scores", DAY_1
    )
    common = [
        "--set",
        f"storage.warehouse_dir={config.storage.warehouse_dir}",
        "--set",
        f"storage.database={database}",
    ]
    for statement in (
        f"DROP TABLE {database}.scores",
        f"WITH x AS (SELECT 1) INSERT INTO {database}.scores SELECT 1, 2.0, current_date()",
    ):
        assert main(["sql", statement, *common]) == 2
        assert "seg sql runs queries only" in capsys.readouterr().err
        assert spark.table(f"{database}.scores").count() == 1
    assert main(["sql", f"SELECT count(*) AS n, 'drop' AS word FROM {database}.scores", *common]) == 0
    assert main(["sql", f"DELETE FROM {database}.scores", "--allow-writes", *common]) == 0
    assert spark.table(f"{database}.scores").count() == 0


def test_reports_of_a_model_dir_at_a_bucket_root_stay_in_that_bucket():
    config = load_config(None, ["storage.model_dir=s3a://bucket"])
    assert Artifacts.from_config(config).report_folder(DAY_1) == "s3a://bucket/reports/2025-01-31"
    config = load_config(None, ["storage.model_dir=s3a://bucket/team/models"])
    assert Artifacts.from_config(config).report_folder(DAY_1) == "s3a://bucket/team/reports/2025-01-31"
    assert parent_uri("dbfs:/models") == "dbfs:/" and parent_uri("file:///data/models") == "file:///data"


def test_secrets_never_reach_error_messages_or_logged_uris():
    secret = "AKIAVERYSECRET"
    for override in (f"spark.conf={{fs.s3a.secret.key: [{secret}]}}", f"storage.database={secret}-x"):
        with pytest.raises(ConfigError) as error:
            load_config(None, [override, "train.epochs=0"])
        assert "train.epochs" in str(error.value)
        if override.startswith("spark.conf"):
            assert secret not in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"spark.conf={{fs.azure.sas.token: '{secret}'"])  # broken YAML
    assert secret not in str(error.value)
    masked = mask_credentials(f"s3a://AKIA:{secret}@bucket/ckpt and https://acct.blob/x?sv=1&sig={secret}")
    assert secret not in masked and "s3a://***@bucket/ckpt" in masked


def test_mlflow_parameters_carry_no_credentials_and_the_process_keeps_its_tracking_uri(tmp_path, monkeypatch):
    import mlflow

    from seglib.representation.stage import track_with_mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    config = load_config(None, [f"storage.model_dir={tmp_path / 'models'}", "train.mlflow.enabled=true"])
    metadata = {
        "version": "ae-1", "snapshot_date": "2025-01-31", "launcher": "horovod", "workers": 2, "rows": 10,
        "plan": {"checkpoint_uri": "s3a://AKIA:SECRETKEY@bucket/checkpoints", "epochs": 1, "spec": {"input_dim": 3}},
        "history": [{"epoch": 1, "phase": "train", "loss": 0.5}],
    }  # fmt: skip
    run_id = track_with_mlflow(config.train.mlflow, Artifacts.from_config(config), metadata, b"weights", "{}")
    # mlflow.set_tracking_uri would have set it for every later training in this process.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    store = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'models' / 'mlflow.db'}")
    parameters = store.get_run(run_id).data.params
    assert parameters["checkpoint_uri"] == "s3a://***@bucket/checkpoints"
    assert not any("SECRETKEY" in value for value in parameters.values())


def test_the_report_escapes_hostile_segment_names_and_categories():
    hostile = "<script>alert('x')</script>"
    category = 'share_<img src=x onerror="alert(1)">'
    run = Row(
        model_version="ae-1", algorithm="kmeans", k=2, selection_reason="cluster.k = 2", silhouette=0.5,
        surrogate_fidelity=0.9, customers=10, novel_customers=0, previous_snapshot=None, ari_with_previous=None,
        kept_segments=0, new_segments=2, matching_basis="none",
    )  # fmt: skip
    catalog = [
        Row(segment_id=0, segment_name=hostile, segment_size=6, segment_share=0.6, description=hostile,
            action=hostile, top_features=[f"high {category}"], surrogate_rules=[f"{category} > 0.5"],
            previous_similarity=None),
    ]  # fmt: skip
    drift = [Row(metric="feature_psi", name=category, value=0.9, threshold=0.25, warning=True)]
    page = render_html(DAY_1, DAY_1, 10, run, catalog, {}, drift)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and "&lt;img src=x" in page


def test_a_refit_that_fails_half_way_leaves_the_previous_preprocessing_current(spark, make_config, tmp_path):
    from seglib.contract.tables import PREPROCESSING_VERSION_COLUMN
    from seglib.features.stage import current_preprocessing_version

    folder = tmp_path / "tills"
    folder.mkdir()
    (folder / "x.csv").write_text(
        "card,bought,total\nc1,2025-06-01 10:00:00,5\nc1,2025-06-03 10:00:00,7\nc2,2025-06-02 10:00:00,9\n"
    )
    common = (BARE_COLUMNS, "input.customers=null", "input.events=null", "features.snapshot_date=2025-06-30",
              f"input.transactions.source={{format: csv, path: '{folder}'}}")  # fmt: skip
    config = make_config(*common)
    features(spark, config)
    fitted = current_preprocessing_version(spark, Artifacts.from_config(config))
    assert fitted is not None
    # The refit's second table write will be refused: its folder no longer carries seglib's marker.
    database = config.storage.database
    catalog_folder = Path(
        Warehouse.from_config(spark, config).location(database, "feature_catalog").removeprefix("file:")
    )
    (catalog_folder / MARKER).unlink()
    refit = config.model_copy(update={"features": config.features.model_copy(update={"refit": True})})
    with pytest.raises(UnsafeWriteError, match="feature_catalog"):
        features(spark, refit)
    assert (
        current_preprocessing_version(spark, Artifacts.from_config(config)) == fitted
    )  # the new fit never became current
    # The snapshot's rows name the version that scaled them, so training on them stays consistent.
    written = (
        spark.table(f"{database}.{FEATURES_TABLE}").select(PREPROCESSING_VERSION_COLUMN).distinct().collect()
    )
    assert len(written) == 1 and written[0][0] != fitted
