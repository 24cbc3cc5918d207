"""Drift of a scored snapshot against its segmentation: population stability of every feature and of
the segment shares, the novel share, and the warnings that recommend retraining. Pure Python on small
driver-side numbers (the per-bin shares come from one Spark aggregation in the scorer)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from seglib.contract.config import DriftConfig
from seglib.segments.state import SegmentationState, SegmentCounts

Bin = TypeVar("Bin", bound=Hashable)
_FLOOR = 1e-4  # a share of zero would make the index infinite

DRIFT_SCHEMA = (
    "metric string, name string, reference double, current double, value double, threshold double, "
    "warning boolean"
)


@dataclass
class DriftReport:
    feature_psi: dict[str, float]
    segment_psi: float
    novel_share: float
    reference_novel_share: float
    shares: dict[int, tuple[float, float]]  # segment -> (reference, current)
    warnings: list[str] = field(default_factory=list)

    @property
    def retrain_recommended(self) -> bool:
        return bool(self.warnings)


def population_stability(reference: Mapping[Bin, float], current: Mapping[Bin, float]) -> float:
    """PSI = sum over bins of (current - reference) * ln(current / reference), shares floored at 1e-4."""
    total = 0.0
    for key in set(reference) | set(current):
        expected = max(reference.get(key, 0.0), _FLOOR)
        actual = max(current.get(key, 0.0), _FLOOR)
        total += (actual - expected) * math.log(actual / expected)
    return total


def measure_drift(
    state: SegmentationState,
    counts: SegmentCounts,
    current_bins: Mapping[str, Mapping[int, float]],
    settings: DriftConfig,
) -> DriftReport:
    """Drift of a scored snapshot against the segmentation's reference, with the warnings that recommend
    retraining. `counts`: the scored customers per segment and the novel ones among them;
    `current_bins`: the snapshot's share of customers per feature bin, binned at the state's edges."""
    current_shares = counts.shares()
    reference_shares = state.segment_shares
    segments = sorted(set(reference_shares) | set(current_shares))
    segment_psi = population_stability(reference_shares, current_shares)
    feature_psi = {
        name: population_stability(state.feature_shares[name], current_bins[name])
        for name in sorted(state.feature_edges)
    }
    novel_share = counts.novel_share
    report = DriftReport(
        feature_psi=feature_psi,
        segment_psi=segment_psi,
        novel_share=novel_share,
        reference_novel_share=state.novel_share,
        shares={s: (reference_shares.get(s, 0.0), current_shares.get(s, 0.0)) for s in segments},
    )
    drifted = {name: psi for name, psi in feature_psi.items() if psi > settings.feature_psi_warning}
    if drifted:
        listed = ", ".join(
            f"{name} {psi:.2f}" for name, psi in sorted(drifted.items(), key=lambda x: -x[1])[:5]
        )
        report.warnings.append(
            f"{len(drifted)} features drifted beyond PSI {settings.feature_psi_warning} ({listed}); retraining "
            "is recommended"
        )
    if segment_psi > settings.segment_psi_warning:
        report.warnings.append(
            f"segment shares moved (PSI {segment_psi:.2f} > {settings.segment_psi_warning}); retraining is recommended"
        )
    if novel_share > settings.novel_share_warning:
        report.warnings.append(
            f"{novel_share:.1%} of customers are novel (> {settings.novel_share_warning:.1%}); retraining is recommended"
        )
    return report


def drift_rows(report: DriftReport, settings: DriftConfig) -> list[tuple[object, ...]]:
    """The report as rows of the segment_drift table (DRIFT_SCHEMA)."""
    rows: list[tuple[object, ...]] = [
        (
            "feature_psi",
            name,
            None,
            None,
            psi,
            settings.feature_psi_warning,
            psi > settings.feature_psi_warning,
        )
        for name, psi in report.feature_psi.items()
    ]
    rows += [
        ("segment_share", str(segment), reference, current, current - reference, None, False)
        for segment, (reference, current) in report.shares.items()
    ]
    rows.append(
        (
            "segment_psi",
            "all segments",
            None,
            None,
            report.segment_psi,
            settings.segment_psi_warning,
            report.segment_psi > settings.segment_psi_warning,
        )
    )
    rows.append(
        (
            "novel_share",
            "novel customers",
            report.reference_novel_share,
            report.novel_share,
            report.novel_share,
            settings.novel_share_warning,
            report.novel_share > settings.novel_share_warning,
        )
    )
    return rows
