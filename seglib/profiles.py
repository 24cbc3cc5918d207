"""What each segment is, in raw business terms: statistics, names from editable rules, tree rules."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pyspark.ml.classification import DecisionTreeClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from seglib.clustering import literal_map
from seglib.config import SurrogateConfig
from seglib.errors import ConfigError

log = logging.getLogger(__name__)

SIGNIFICANCE_LEVEL = 0.01
TOP_FEATURES = 5


def segment_profiles(members: DataFrame, feature_names: list[str]) -> DataFrame:
    """Per segment and feature (a long table): size and share; mean and median of the unscaled feature
    in the segment and in the population; lift; the standardized difference (in population standard
    deviations); Welch's t against the rest of the population and whether it is significant at 1%
    after a Bonferroni correction over all segment x feature tests; rank 1 = most distinguishing.

    `members` holds customer_id, segment_id and the raw feature columns.
    """
    from scipy.stats import norm

    values = members.unpivot(
        ["customer_id", "segment_id"], list[str | Column](feature_names), "feature", "value"
    ).where(F.col("value").isNotNull() & ~F.isnan("value"))
    per_segment = values.groupBy("segment_id", "feature").agg(
        F.count(F.lit(1)).alias("_n"),
        F.sum("value").alias("_sum"),
        F.sum(F.col("value") * F.col("value")).alias("_squares"),
        F.percentile_approx("value", 0.5, 1000).cast("double").alias("segment_median"),
    )
    population = values.groupBy("feature").agg(
        F.count(F.lit(1)).alias("_population_n"),
        F.sum("value").alias("_population_sum"),
        F.sum(F.col("value") * F.col("value")).alias("_population_squares"),
        F.percentile_approx("value", 0.5, 1000).cast("double").alias("population_median"),
    )
    sizes = (
        members.groupBy("segment_id")
        .agg(F.count(F.lit(1)).alias("segment_size"))
        .crossJoin(members.agg(F.count(F.lit(1)).alias("_customers")))
        .withColumn("segment_share", F.col("segment_size") / F.col("_customers"))
    )
    segments = sizes.count()
    critical = float(norm.isf(SIGNIFICANCE_LEVEL / 2 / max(segments * len(feature_names), 1)))
    n, rest_n = F.col("_n"), F.col("_population_n") - F.col("_n")
    mean = F.col("_sum") / n
    variance = F.greatest(F.col("_squares") / n - mean * mean, F.lit(0.0))
    population_mean = F.col("_population_sum") / F.col("_population_n")
    population_sd = F.sqrt(
        F.greatest(
            F.col("_population_squares") / F.col("_population_n") - population_mean * population_mean,
            F.lit(0.0),
        )
    )
    rest_mean = (F.col("_population_sum") - F.col("_sum")) / rest_n
    rest_variance = F.greatest(
        (F.col("_population_squares") - F.col("_squares")) / rest_n - rest_mean * rest_mean, F.lit(0.0)
    )
    standard_error = F.sqrt(variance / n + rest_variance / rest_n)
    welch = F.when(standard_error > 0, (mean - rest_mean) / standard_error)
    joined = per_segment.join(population, "feature").select(
        "segment_id",
        "feature",
        mean.alias("segment_mean"),
        "segment_median",
        population_mean.alias("population_mean"),
        "population_median",
        F.when(population_mean != 0, mean / population_mean).alias("lift"),
        F.when(population_sd > 0, (mean - population_mean) / population_sd).otherwise(0.0).alias("std_diff"),
        welch.alias("t_statistic"),
        F.coalesce(F.abs(welch) > critical, F.lit(False)).alias("significant"),
    )
    ranking = Window.partitionBy("segment_id").orderBy(F.abs("std_diff").desc(), "feature")
    return (
        joined.join(sizes, "segment_id")
        .withColumn("rank", F.row_number().over(ranking))
        .select(
            F.col("segment_id").cast("int"),
            F.col("segment_size").cast("long"),
            "segment_share",
            "feature",
            "segment_mean",
            "segment_median",
            "population_mean",
            "population_median",
            "lift",
            "std_diff",
            "t_statistic",
            "significant",
            F.col("rank").cast("int"),
        )
    )


@dataclass(frozen=True)
class FeatureStat:
    segment_mean: float
    population_mean: float
    std_diff: float
    significant: bool
    lift: float | None


@dataclass
class SegmentProfile:
    segment_id: int
    size: int
    share: float
    features: dict[str, FeatureStat] = field(default_factory=dict)

    def top(self, count: int = TOP_FEATURES) -> list[tuple[str, FeatureStat]]:
        ranked = sorted(self.features.items(), key=lambda item: (-abs(item[1].std_diff), item[0]))
        return [item for item in ranked if item[1].significant][:count]

    def describe_top(self, count: int = TOP_FEATURES) -> list[str]:
        return [
            f"{name} {readable_number(stat.segment_mean)} vs {readable_number(stat.population_mean)} "
            f"({stat.std_diff:+.2f} sd)"
            for name, stat in self.top(count)
        ]


def collect_profiles(profiles: DataFrame) -> dict[int, SegmentProfile]:
    """The long profile table (k x features rows) as objects on the driver."""
    result: dict[int, SegmentProfile] = {}
    for row in profiles.collect():
        profile = result.setdefault(
            row["segment_id"], SegmentProfile(row["segment_id"], row["segment_size"], row["segment_share"])
        )
        profile.features[row["feature"]] = FeatureStat(
            row["segment_mean"], row["population_mean"], row["std_diff"], row["significant"], row["lift"]
        )
    return dict(sorted(result.items()))


# ---------------------------------------------------------------------------------------------
# Names, descriptions and actions from the rules file


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_RuleModel):
    """One feature compared with the population, in standard deviations (std_diff)."""

    feature: str | list[str] = Field(
        description="A feature name, or alternatives: the first one present is used."
    )
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Condition:
        if (self.above is None) == (self.below is None):
            raise ValueError(f"condition on {self.feature!r} needs exactly one of above or below")
        return self

    def candidates(self) -> list[str]:
        return [self.feature] if isinstance(self.feature, str) else list(self.feature)


class NamingRule(_RuleModel):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str = Field(min_length=1, max_length=60)
    description: str = Field(min_length=1)
    action: str = Field(min_length=1)
    when: list[Condition] = Field(min_length=1)


class NamingRules(_RuleModel):
    rules: list[NamingRule] = Field(min_length=1)
    fallback: dict[Literal["description", "action"], str]


def load_naming_rules(path: str | None) -> NamingRules:
    if path is None:
        text = resources.files("seglib").joinpath("segment_rules.yaml").read_text()
        source = "built-in seglib/segment_rules.yaml"
    else:
        rules_path = Path(path)
        if not rules_path.is_file():
            raise ConfigError(
                f"cluster.naming_rules: {path} does not exist; copy seglib/segment_rules.yaml and edit it"
            )
        text, source = rules_path.read_text(), path
    try:
        return NamingRules.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"segment naming rules {source} are invalid: {error}") from None


@dataclass(frozen=True)
class SegmentName:
    name: str
    description: str
    action: str
    rule: str


def _strength(rule: NamingRule, profile: SegmentProfile) -> float | None:
    """How far the segment clears the rule's bars (None: a condition fails or names no known feature)."""
    margins = []
    for condition in rule.when:
        name = next(
            (candidate for candidate in condition.candidates() if candidate in profile.features), None
        )
        if name is None:
            return None
        stat = profile.features[name]
        if condition.above is not None:
            margin, away_from_average = stat.std_diff - condition.above, condition.above >= 0
        else:
            assert condition.below is not None
            margin, away_from_average = condition.below - stat.std_diff, condition.below <= 0
        if margin < 0 or (away_from_average and not stat.significant):
            return None
        margins.append(margin)
    return sum(margins) / len(margins)


def readable_number(value: float) -> str:
    """3,262 / 25.7 / 0.591: thousands separated, about three significant digits, no exponent."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "n/a"


def _fill(template: str, profile: SegmentProfile) -> str:
    values = _Fields(
        {
            "share": f"{profile.share:.0%}",
            "size": f"{profile.size:,}",
        }
    )
    for name, stat in profile.features.items():
        values[name] = readable_number(stat.segment_mean)
        values[f"{name}_population"] = readable_number(stat.population_mean)
    values["top_features"] = (
        ", ".join(f"{name} {'high' if stat.std_diff > 0 else 'low'}" for name, stat in profile.top(3))
        or "no feature far from average"
    )
    try:
        return template.format_map(values)
    except (ValueError, IndexError) as error:
        raise ConfigError(f"segment naming rules: template {template!r} is malformed ({error})") from None


def _fallback_name(profile: SegmentProfile) -> str:
    top = profile.top(2)
    if not top:
        return "Average customers"
    words = [f"{'high' if stat.std_diff > 0 else 'low'} {name.replace('_', ' ')}" for name, stat in top]
    return (" & ".join(words)).capitalize()[:60]


def name_segments(
    profiles: dict[int, SegmentProfile], rules: NamingRules, taken: set[str] | None = None
) -> dict[int, SegmentName]:
    """Each segment gets the first rule (in file order) whose conditions it meets and that no other
    segment meets more strongly; otherwise a name built from its top features. Names are unique."""
    used = set(taken or ())
    remaining = dict(profiles)
    names: dict[int, SegmentName] = {}
    for rule in rules.rules:
        strengths = {
            segment_id: strength
            for segment_id, profile in remaining.items()
            if (strength := _strength(rule, profile)) is not None
        }
        if not strengths or rule.name in used:
            continue
        winner = max(strengths, key=lambda segment_id: (strengths[segment_id], -segment_id))
        profile = remaining.pop(winner)
        names[winner] = SegmentName(
            rule.name, _fill(rule.description, profile), _fill(rule.action, profile), rule.id
        )
        used.add(rule.name)
    for segment_id, profile in remaining.items():
        name = base = _fallback_name(profile)
        suffix = 2
        while name in used:
            name, suffix = f"{base} ({suffix})", suffix + 1
        used.add(name)
        names[segment_id] = SegmentName(
            name,
            _fill(rules.fallback["description"], profile),
            _fill(rules.fallback["action"], profile),
            "fallback",
        )
    return dict(sorted(names.items()))


# ---------------------------------------------------------------------------------------------
# Surrogate decision tree


@dataclass(frozen=True)
class Surrogate:
    fidelity: float  # accuracy of the tree on held-out customers, against the segments
    rules: dict[int, list[str]]  # per segment: readable paths, best first


def _leaf_paths(
    node: Any, names: list[str], path: list[tuple[str, bool, float]]
) -> list[tuple[list[tuple[str, bool, float]], Any]]:
    """(conditions, leaf) for every leaf; a condition is (feature, is_at_most, threshold)."""
    if node.getClass().getSimpleName() == "LeafNode":
        return [(path, node)]
    split = node.split()
    feature, threshold = names[split.featureIndex()], float(split.threshold())
    return _leaf_paths(node.leftChild(), names, [*path, (feature, True, threshold)]) + _leaf_paths(
        node.rightChild(), names, [*path, (feature, False, threshold)]
    )


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
    label_of = {segment_id: float(index) for index, segment_id in enumerate(segment_ids)}
    labels = literal_map(label_of)
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
    assembled = VectorAssembler(inputCols=feature_names, outputCol="_raw").transform(filled)
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
    segment_sizes = {label: 0.0 for label in label_of.values()}
    leaves = _leaf_paths(model._java_obj.rootNode(), feature_names, [])
    described: dict[int, list[tuple[float, str]]] = {segment_id: [] for segment_id in segment_ids}
    leaf_counts = []
    for conditions, leaf in leaves:
        counts = [float(x) for x in leaf.impurityStats().stats()]
        leaf_counts.append((conditions, leaf, counts))
        for label, count in enumerate(counts):
            segment_sizes[float(label)] = segment_sizes.get(float(label), 0.0) + count
    for conditions, leaf, counts in leaf_counts:
        label = int(leaf.prediction())
        total = sum(counts)
        if total == 0 or label >= len(segment_ids):
            continue
        coverage = counts[label] / max(segment_sizes[float(label)], 1.0)
        precision = counts[label] / total
        described[segment_ids[label]].append(
            (
                coverage,
                f"{_readable(conditions)} (covers {coverage:.0%} of the segment, {precision:.0%} precise)",
            )
        )
    rules = {
        segment_id: [
            text for _, text in sorted(items, key=lambda item: -item[0])[: settings.rules_per_segment]
        ]
        for segment_id, items in described.items()
    }
    return Surrogate(float(fidelity) if fidelity is not None and not math.isnan(fidelity) else 0.0, rules)
