"""Every config template in conf/ generates its own kind of data and turns it into features."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from seglib.contract.config import load_config
from seglib.features.stage import features
from seglib.inputs.validation import quarantined_rows
from seglib.synthetic.generator import generate

CONF = Path(__file__).resolve().parents[2] / "conf"

# Per template: families and features it must yield, and the tables it reads.
EXPECTED = {
    "retail": ({"recency", "frequency", "monetary", "timing", "basket", "availability"}, {"has_purchases"}),
    "ecommerce": (
        {"category", "channel", "promotions", "returns", "browsing", "conversion", "demographics"},
        {"has_purchases", "has_events", "has_demographics", "distinct_browse_categories", "gender", "region"},
    ),
    "banking": (
        {"category", "channel", "returns", "attributes", "demographics"},
        {"share_travel", "attr_product_tier", "attr_credit_limit", "has_demographics", "region"},
    ),
    "mobile_app": (
        {"browsing", "conversion", "attributes"},
        {"sessions_7d", "view_to_purchase", "attr_device_os", "has_events", "distinct_browse_categories"},
    ),
    "healthcare": (
        {"category", "channel", "basket", "demographics", "promotions"},
        {"age", "share_primary_care", "channel_share_telehealth", "gender", "basket_size"},
    ),
}


def template_config(name: str, root: Path, database: str):
    """The template as shipped, with this test's folders, databases and a small dirty data set."""
    template = load_config(CONF / f"{name}.yaml")
    overrides = [
        "spark.shuffle_partitions=2",
        f"storage.warehouse_dir={root / 'warehouse'}",
        f"storage.model_dir={root / 'models'}",
        f"storage.cache_dir={root / 'cache'}",
        f"storage.database={database}",
        f"input.database={database}_raw",
        "generate.customers=150",
        "generate.partitions=2",
        "generate.dirty_rate=0.02",
    ]
    for table in ("transactions", "customers", "events"):
        settings = getattr(template.input, table)
        if settings is not None and settings.source.path is not None:
            overrides.append(f"input.{table}.source.path={root / 'raw' / table}")
    return load_config(CONF / f"{name}.yaml", overrides)


def test_every_shipped_template_is_covered():
    shipped = {path.stem for path in CONF.glob("*.yaml")} - {"default"}  # not a template
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_generates_its_data_and_yields_its_features(spark, tmp_path, name):
    config = template_config(name, tmp_path, f"seg_template_{name}")
    assert config.generate.domain == name
    generated = generate(spark, config)
    result = features(spark, config)
    families, names = EXPECTED[name]
    specs = result.metadata.features
    assert families <= {spec["family"] for spec in specs}
    assert names <= {spec["name"] for spec in specs}
    # input rows = accepted + after the snapshot + quarantined, per table; the quarantine holds the defects
    assert sum(sum(counts.values()) for counts in result.input_counts.values()) == (
        generated.transactions + generated.customers + generated.events
    )
    quarantined = sum(quarantined_rows(counts) for counts in result.input_counts.values())
    assert spark.table(f"{config.storage.database}.quarantine").count() == quarantined > 0
    table = spark.table(f"{config.storage.database}.customer_features")
    assert table.count() == result.customers > 100
    assert table.select("customer_id").distinct().count() == result.customers
    vectors = [row["features"] for row in table.select("features").collect()]
    assert {len(vector) for vector in vectors} == {result.dimension}
    assert all(math.isfinite(value) for vector in vectors for value in vector)
    # features that are always defined are never null
    defined = [spec["name"] for spec in specs if spec["fill"] != "impute"]
    nulls = table.select([F.sum(F.col(name).isNull().cast("int")).alias(name) for name in defined]).first()
    assert {name: nulls[name] for name in defined if nulls[name]} == {}
