"""The report page without Spark: what a reader sees for a segmentation, a scored snapshot and drift."""

from __future__ import annotations

import datetime as dt
import re

from pyspark.sql import Row

from seglib.reporting.page import render_html
from seglib.reporting.stage import map_space

TRAINED = dt.date(2025, 1, 31)
SCORED = dt.date(2025, 2, 28)


def run_row(**changes: object) -> Row:
    fields = dict(
        model_version="ae-20250131-1", algorithm="kmeans", k=2, selection_reason="cluster.k = 2",
        silhouette=0.512, surrogate_fidelity=0.934, customers=1500, novel_customers=12,
        previous_snapshot=None, ari_with_previous=None, kept_segments=0, new_segments=2, matching_basis="first run",
    )  # fmt: skip
    fields.update(changes)
    return Row(**fields)


CATALOG = [
    Row(segment_id=3, segment_name="Bargain hunters", segment_size=900, segment_share=0.6,
        description="Frequent small baskets", action="Send coupons", top_features=["discount_share 0.6 vs 0.2"],
        surrogate_rules=["discount_share > 0.4 (covers 80% of the segment, 90% precise)"], previous_similarity=0.8),
    Row(segment_id=7, segment_name="Big spenders", segment_size=588, segment_share=0.392,
        description="Rare large orders", action="Offer premium service", top_features=[], surrogate_rules=[],
        previous_similarity=None),
]  # fmt: skip


def test_one_card_per_segment_with_its_numbers_rules_and_identity():
    page = render_html(TRAINED, TRAINED, 1500, run_row(), CATALOG, {"sizes": (b"png-bytes", "Sizes")}, [])
    cards = re.findall(r'<div class="card"[^>]*data-segment="(\d+)"', page)
    assert cards == ["3", "7"]
    assert "900 customers &middot; 60.0%" in page and "588 customers &middot; 39.2%" in page
    assert "same segment as last run (overlap 0.80)" in page and "new segment" in page
    assert "<li>none stands out</li>" in page  # the second segment has no distinguishing feature
    assert "kmeans with k = 2" in page and "silhouette 0.512" in page and "93.4%" in page
    assert "First segmentation of this data" in page
    assert 'src="data:image/png;base64,cG5nLWJ5dGVz"' in page  # the chart is inlined
    assert "Drift since training" not in page and "scored with the segmentation" not in page


def test_a_scored_snapshot_names_its_segmentation_and_shows_drift_warnings():
    run = run_row(previous_snapshot=dt.date(2024, 12, 31), ari_with_previous=0.87, kept_segments=2, new_segments=0,
                  matching_basis="members")  # fmt: skip
    drift = [
        Row(metric="feature_psi", name="frequency", value=0.41, threshold=0.25, warning=True),
        Row(metric="segment_psi", name="all segments", value=0.01, threshold=0.25, warning=False),
    ]
    page = render_html(SCORED, TRAINED, 1700, run, CATALOG, {}, drift)
    assert "1,700 customers scored with the segmentation trained on snapshot 2025-01-31" in page
    assert "adjusted Rand index 0.870 (2 segments kept, 0 new, matched on members)" in page
    assert "Retraining recommended:<ul><li>feature_psi frequency: 0.410 (threshold 0.25)</li></ul>" in page
    assert "all segments" not in page  # only warnings are listed
    quiet = render_html(SCORED, TRAINED, 1700, run, CATALOG, {}, drift[1:])
    assert "No drift beyond the thresholds." in quiet


def test_cards_say_which_rule_named_each_segment_and_show_its_lifetime_value():
    valued = [
        Row(**CATALOG[0].asDict(), naming_rule="deal_seekers", expected_purchases=1250.4, expected_spend=30012.5,
            mean_probability_alive=0.734),
        Row(**CATALOG[1].asDict(), naming_rule=None, expected_purchases=None, expected_spend=None,
            mean_probability_alive=None),
    ]  # fmt: skip
    page = render_html(TRAINED, TRAINED, 1500, run_row(), valued, {}, [], value_horizon_days=365)
    first, second = page.split('data-segment="7"')
    assert "named by rule <code>deal_seekers</code>" in first
    assert "next 365 days (BG/NBD, Gamma-Gamma): 1,250 purchases, 30,012 spend (33.35 per customer)" in first
    assert "73% of its buyers likely still active" in first
    assert "no naming rule fits: named by its features" in second and "next 365 days" not in second
    # Without a fitted lifetime value (older runs, clv.enabled false) no value line appears.
    assert "next 365 days" not in render_html(TRAINED, TRAINED, 1500, run_row(), valued, {}, [])


def test_the_segment_map_projects_the_space_the_run_clustered():
    assert map_space(run_row(clustering_space="reconstruction"))[0] == "reconstruction"
    assert map_space(run_row(clustering_space="embedding"))[0] == "embedding"
    # Runs written before the column existed, and their null after it was added, clustered the embedding.
    assert map_space(run_row())[0] == "embedding"
    assert map_space(run_row(clustering_space=None))[0] == "embedding"
