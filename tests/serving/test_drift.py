"""The serving layer without Spark: the saved segmentation state, drift and its warnings."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from seglib.contract.config import DriftConfig
from seglib.segments.state import SegmentationState, SegmentCounts
from seglib.serving.drift import drift_rows, measure_drift, population_stability

SNAPSHOT = dt.date(2025, 1, 31)


def reference_state() -> SegmentationState:
    return SegmentationState(
        snapshot=SNAPSHOT,
        model_version="ae-20250131-1",
        algorithm="kmeans",
        segment_of={0: 7, 1: 3},
        centers={0: [0.0, 1.5], 1: [-2.25, 0.125]},
        names={7: "Loyal high spenders", 3: "Bargain hunters"},
        novelty_threshold=0.42,
        segment_shares={7: 0.61, 3: 0.39},
        feature_edges={"frequency": [1.0, 2.0, 5.0], "recency_days": [10.0, 30.0]},
        feature_shares={
            "frequency": {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25},
            "recency_days": {0: 0.5, 1: 0.3, 2: 0.2, -1: 0.0},
        },
        novel_share=0.02,
        space="reconstruction",
    )


def test_the_saved_state_round_trips_through_json_with_integer_keys():
    state = reference_state()
    text = state.to_json()
    restored = SegmentationState.from_json(text)
    assert restored == state
    # JSON keys are strings; the restored maps are keyed by int again, so lookups by segment id work.
    assert restored.names[7] == "Loyal high spenders" and restored.segment_of[1] == 3
    assert restored.feature_shares["recency_days"][-1] == 0.0
    assert restored.snapshot == SNAPSHOT


def test_a_state_saved_when_novel_customers_had_segment_minus_one_reads_with_its_novel_share():
    data = json.loads(reference_state().to_json())
    del data["novel_share"]
    data["segment_shares"] = {"7": 0.6, "3": 0.38, "-1": 0.02}
    restored = SegmentationState.from_json(json.dumps(data))
    assert restored.segment_shares == {7: 0.6, 3: 0.38} and restored.novel_share == 0.02


def test_a_state_saved_before_cluster_space_existed_scores_in_the_embedding_it_was_fitted_in():
    data = json.loads(reference_state().to_json())
    del data["space"]
    assert SegmentationState.from_json(json.dumps(data)).space == "embedding"


def test_an_unchanged_snapshot_raises_no_warning():
    state = reference_state()
    counts = SegmentCounts({7: 610, 3: 390}, novel=20)
    report = measure_drift(state, counts, state.feature_shares, DriftConfig())
    assert report.warnings == [] and not report.retrain_recommended
    assert report.segment_psi == pytest.approx(0.0, abs=1e-12)
    assert report.feature_psi == {"frequency": pytest.approx(0.0), "recency_days": pytest.approx(0.0)}
    assert report.novel_share == pytest.approx(0.02) and report.reference_novel_share == pytest.approx(0.02)
    assert report.shares[7] == (0.61, 0.61)


def test_each_kind_of_drift_warns_with_its_numbers():
    state = reference_state()
    settings = DriftConfig(feature_psi_warning=0.25, segment_psi_warning=0.25, novel_share_warning=0.1)
    counts = SegmentCounts({7: 250, 3: 750}, novel=200)
    shifted = {
        "frequency": {0: 0.7, 1: 0.1, 2: 0.1, 3: 0.1},
        "recency_days": {0: 0.5, 1: 0.3, 2: 0.2},
    }
    report = measure_drift(state, counts, shifted, settings)
    expected_psi = population_stability(state.feature_shares["frequency"], shifted["frequency"])
    assert report.feature_psi["frequency"] == pytest.approx(expected_psi) and expected_psi > 0.25
    assert report.feature_psi["recency_days"] < 0.25
    assert report.novel_share == pytest.approx(0.2)
    assert len(report.warnings) == 3 and report.retrain_recommended
    features, segments, novel = report.warnings
    assert features.startswith("1 features drifted beyond PSI 0.25 (frequency ")
    assert "segment shares moved" in segments and "20.0% of customers are novel (> 10.0%)" in novel
    rows = {(row[0], row[1]): row for row in drift_rows(report, settings)}
    assert rows[("feature_psi", "frequency")][6] is True and rows[("feature_psi", "recency_days")][6] is False
    assert rows[("segment_share", "7")][2:5] == (0.61, 0.25, pytest.approx(-0.36))
    assert rows[("novel_share", "novel customers")][6] is True
    assert rows[("segment_psi", "all segments")][4] == pytest.approx(report.segment_psi)


def test_population_stability_is_symmetric_in_its_floor_and_zero_only_for_equal_shares():
    assert population_stability({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5}) == 0.0
    # A bin missing on one side counts as the floor share, not as an infinite index.
    one_sided = population_stability({0: 1.0}, {1: 1.0})
    assert 0 < one_sided < 20 and one_sided == pytest.approx(population_stability({1: 1.0}, {0: 1.0}))
