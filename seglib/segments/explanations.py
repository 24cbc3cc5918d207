"""Explanations of a segmentation: a surrogate decision tree on the unscaled features, its fidelity,
and per segment the readable rules of the leaves that predict it."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from pyspark.ml.classification import DecisionTreeClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from seglib.contract.config import SurrogateConfig
from seglib.segments.algorithms import literal_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Surrogate:
    fidelity: float  # accuracy of the tree on held-out customers, against the segments
    rules: dict[int, list[str]]  # per segment: readable paths, best first


Condition = tuple[str, bool, float]  # (feature, is_at_most, threshold)

_SPLIT_LINE = re.compile(
    r"^(?P<indent> *)(?:If|Else) \(feature (?P<feature>\d+) (?P<test><=|>) (?P<threshold>\S+)\)$"
)
_LEAF_LINE = re.compile(r"^ *Predict: \S+$")


def leaf_conditions(debug_string: str, names: list[str]) -> list[list[Condition]]:
    """The conditions on the path to every leaf of a tree, in Spark's leaf order (left branch first, the
    order of the model's `leafCol` indices), read from the model's public `toDebugString`."""
    leaves: list[list[Condition]] = []
    path: list[tuple[int, Condition]] = []  # (indentation, condition) from the root down
    for line in debug_string.splitlines()[1:]:
        if not line.strip():
            continue
        split = _SPLIT_LINE.match(line)
        if split is not None:
            depth = len(split["indent"])
            path = [(indent, condition) for indent, condition in path if indent < depth]
            feature = names[int(split["feature"])]
            path.append((depth, (feature, split["test"] == "<=", float(split["threshold"]))))
        elif _LEAF_LINE.match(line):
            leaves.append([condition for _, condition in path])
        else:
            raise ValueError(f"unexpected line in the surrogate tree's description: {line.strip()!r}")
    return leaves


def _readable(conditions: list[tuple[str, bool, float]]) -> str:
    """Merge repeated tests of one feature into a range: 'x <= 3' and 'x > 1' give '1 < x <= 3'."""
    bounds: dict[str, list[float | None]] = {}
    for feature, at_most, threshold in conditions:
        low, high = bounds.setdefault(feature, [None, None])
        if at_most:
            bounds[feature][1] = threshold if high is None else min(high, threshold)
        else:
            bounds[feature][0] = threshold if low is None else max(low, threshold)
    parts = []
    for feature, (low, high) in bounds.items():
        if low is not None and high is not None:
            parts.append(f"{low:,.4g} < {feature} <= {high:,.4g}")
        elif high is not None:
            parts.append(f"{feature} <= {high:,.4g}")
        else:
            parts.append(f"{feature} > {low:,.4g}")
    return " and ".join(parts) or "everyone"


def surrogate_tree(
    members: DataFrame,
    feature_names: list[str],
    medians: dict[str, float],
    settings: SurrogateConfig,
    seed: int,
) -> Surrogate:
    """A Spark MLlib decision tree predicting the segment from the unscaled features: its fidelity on
    held-out customers and, per segment, the leaves that predict it, as readable rules with their
    coverage (share of the segment's customers in the leaf) and precision."""
    segment_ids = sorted(row[0] for row in members.select("segment_id").distinct().collect())
    assembled = _tree_inputs(members, feature_names, medians, segment_ids)
    held_out = F.pmod(F.col("_hash"), F.lit(5)) == 0
    training, testing = assembled.where(~held_out), assembled.where(held_out)
    model = DecisionTreeClassifier(
        labelCol="_label",
        featuresCol="_raw",
        maxDepth=settings.max_depth,
        minInstancesPerNode=settings.min_instances_per_node,
        seed=seed,
    ).fit(training)
    scored = model.transform(testing).select(
        (F.col("prediction") == F.col("_label")).cast("double").alias("_hit")
    )
    fidelity = scored.agg(F.avg("_hit")).first()[0]  # type: ignore[index]
    conditions = leaf_conditions(model.toDebugString, feature_names)
    counted = model.setLeafCol("_leaf").transform(training).groupBy("_leaf", "_label").count().collect()
    counts = [[0.0] * len(segment_ids) for _ in conditions]
    for row in counted:
        counts[int(row["_leaf"])][int(row["_label"])] = float(row["count"])
    rules = _segment_rules(
        list(zip(conditions, counts, strict=True)), segment_ids, settings.rules_per_segment
    )
    return Surrogate(float(fidelity) if fidelity is not None and not math.isnan(fidelity) else 0.0, rules)


def _tree_inputs(
    members: DataFrame, feature_names: list[str], medians: dict[str, float], segment_ids: list[int]
) -> DataFrame:
    """The segment as a class label, a hash for the held-out split, and the features (missing values
    at the population median) assembled into one vector."""
    labels = literal_map({segment_id: float(index) for index, segment_id in enumerate(segment_ids)})
    filled = members.select(
        # Nominal metadata gives the tree its number of classes: inferred from the data, Spark refuses
        # more than 100 ("Labels MUST be in [0, 100)"), and cluster.k goes up to 1000.
        labels[F.col("segment_id")].alias(
            "_label", metadata={"ml_attr": {"type": "nominal", "num_vals": len(segment_ids)}}
        ),
        F.xxhash64("customer_id").alias("_hash"),
        *[
            F.coalesce(F.when(~F.isnan(name), F.col(name)), F.lit(medians.get(name, 0.0)))
            .cast("double")
            .alias(name)
            for name in feature_names
        ],
    )
    return VectorAssembler(inputCols=feature_names, outputCol="_raw").transform(filled)


def _segment_rules(
    leaves: list[tuple[list[Condition], list[float]]], segment_ids: list[int], per_segment: int
) -> dict[int, list[str]]:
    """Per segment, the leaves that predict it (the most frequent training label in the leaf, the lowest
    on a tie, as the tree predicts) as readable rules, the best-covering first. `leaves` holds each
    leaf's conditions and its training customers per label."""
    segment_sizes = [sum(counts[label] for _, counts in leaves) for label in range(len(segment_ids))]
    described: dict[int, list[tuple[float, str]]] = {segment_id: [] for segment_id in segment_ids}
    for conditions, counts in leaves:
        label = max(range(len(counts)), key=lambda index: (counts[index], -index))
        total = sum(counts)
        if total == 0 or label >= len(segment_ids):
            continue
        coverage = counts[label] / max(segment_sizes[label], 1.0)
        precision = counts[label] / total
        described[segment_ids[label]].append(
            (
                coverage,
                f"{_readable(conditions)} (covers {coverage:.0%} of the segment, {precision:.0%} precise)",
            )
        )
    return {
        segment_id: [text for _, text in sorted(items, key=lambda item: -item[0])[:per_segment]]
        for segment_id, items in described.items()
    }
