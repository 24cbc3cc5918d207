"""Segment names, descriptions and marketing actions from an editable rules file
(`seglib/segments/segment_rules.yaml` by default), matched against each segment's profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seglib.contract.errors import ConfigError
from seglib.segments.profiles import FeatureStat, SegmentProfile, readable_number

log = logging.getLogger(__name__)


class _RuleModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


BOUNDS = ("above", "below", "median_at_least", "median_at_most", "mean_at_least", "mean_at_most")


class Condition(_RuleModel):
    """One feature of a segment: compared with the population in standard deviations (above, below:
    std_diff), or its median or mean against a fixed value in the feature's own units (lifecycle
    states such as "bought once" or "last purchase over 90 days ago" are absolute, not relative)."""

    feature: str | list[str] = Field(
        description="A feature name, or alternatives: the first one present is used."
    )
    above: float | None = None
    below: float | None = None
    median_at_least: float | None = None
    median_at_most: float | None = None
    mean_at_least: float | None = None
    mean_at_most: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Condition:
        if sum(getattr(self, bound) is not None for bound in BOUNDS) != 1:
            raise ValueError(f"condition on {self.feature!r} needs exactly one of {', '.join(BOUNDS)}")
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
    qualifiers: list[str] = Field(
        default_factory=list,
        description="Features tried first to tell apart segments that share a rule's name.",
    )
    fallback: dict[Literal["description", "action"], str]


def load_naming_rules(path: str | None) -> NamingRules:
    if path is None:
        text = resources.files("seglib.segments").joinpath("segment_rules.yaml").read_text()
        source = "built-in seglib/segments/segment_rules.yaml"
    else:
        rules_path = Path(path)
        if not rules_path.is_file():
            raise ConfigError(
                f"cluster.naming_rules: {path} does not exist; copy seglib/segments/segment_rules.yaml and edit it"
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
        margin = _margin(condition, profile.features[name])
        if margin is None:
            return None
        margins.append(margin)
    return sum(margins) / len(margins)


def _margin(condition: Condition, stat: FeatureStat) -> float | None:
    """How far one feature clears one bar, in population standard deviations (None: it does not).
    An absolute bar's margin is scaled by the population spread that std_diff implies, so that
    absolute and relative conditions weigh alike when segments compete for a rule."""
    if condition.above is not None or condition.below is not None:
        if condition.above is not None:
            margin, away_from_average = stat.std_diff - condition.above, condition.above >= 0
        else:
            assert condition.below is not None
            margin, away_from_average = condition.below - stat.std_diff, condition.below <= 0
        return None if margin < 0 or (away_from_average and not stat.significant) else margin
    # The validator lets exactly one bound through: the first that is set is the condition's.
    bar, value, direction = next(
        (getattr(condition, bound), value, direction)
        for bound, value, direction in (
            ("median_at_least", stat.segment_median, 1.0),
            ("median_at_most", stat.segment_median, -1.0),
            ("mean_at_least", stat.segment_mean, 1.0),
            ("mean_at_most", stat.segment_mean, -1.0),
        )
        if getattr(condition, bound) is not None
    )
    if value is None:
        return None
    difference = direction * (value - bar)
    if difference < 0:
        return None
    return difference / stat.population_sd if stat.population_sd > 0 else 0.0


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


# A qualifier names a difference a marketer can see: at least a quarter of a standard deviation.
QUALIFIER_MIN_GAP = 0.25


def _qualified_name(
    rule: NamingRule, profile: SegmentProfile, holder: SegmentProfile | None, preferred: list[str]
) -> str:
    """The name of a rule that another segment holds, qualified by the feature (among those the rule
    does not test) that sets this segment furthest apart from the holder ("One-time buyers, lapsed,
    high monetary mean"); without a holder in this run, by its own most distinctive feature. The
    `preferred` features (the rules file's qualifiers) come first when one of them differs enough."""
    tested = {name for condition in rule.when for name in condition.candidates()}

    def gap(name: str) -> float:
        stat = profile.features[name]
        return stat.std_diff - holder.features[name].std_diff if holder else stat.std_diff

    candidates = [
        name
        for name, stat in profile.features.items()
        if name not in tested
        and (stat.significant if holder is None else name in holder.features)
        and abs(gap(name)) >= QUALIFIER_MIN_GAP
    ]
    if not candidates:
        return rule.name
    candidates = [name for name in candidates if name in preferred] or candidates
    name = max(candidates, key=lambda candidate: (abs(gap(candidate)), candidate))
    qualifier = f"{'high' if gap(name) > 0 else 'low'} {name.replace('_', ' ')}"
    return f"{rule.name[: 58 - len(qualifier)]}, {qualifier}"[:60]


def _unique(name: str, used: set[str]) -> str:
    unique, suffix = name, 2
    while unique in used:
        unique, suffix = f"{name} ({suffix})", suffix + 1
    used.add(unique)
    return unique


def name_segments(
    profiles: dict[int, SegmentProfile], rules: NamingRules, taken: set[str] | None = None
) -> dict[int, SegmentName]:
    """Each segment gets the first rule (in file order) whose conditions it meets and that no other
    segment meets more strongly. A segment that lost a rule to a stronger one and meets no later rule
    gets that rule's name, texts and id, qualified by its most distinctive other feature; a segment
    that met no rule at all a name built from its top features. Names are unique."""
    used = set(taken or ())
    remaining = dict(profiles)
    names: dict[int, SegmentName] = {}
    lost: dict[int, NamingRule] = {}
    holders: dict[str, int] = {}  # rule id -> the segment that got it
    for rule in rules.rules:
        strengths = {
            segment_id: strength
            for segment_id, profile in remaining.items()
            if (strength := _strength(rule, profile)) is not None
        }
        if not strengths or rule.name in used:
            for segment_id in strengths:
                lost.setdefault(segment_id, rule)
            continue
        winner = max(strengths, key=lambda segment_id: (strengths[segment_id], -segment_id))
        for segment_id in strengths:
            if segment_id != winner:
                lost.setdefault(segment_id, rule)
        profile = remaining.pop(winner)
        holders[rule.id] = winner
        names[winner] = SegmentName(
            rule.name, _fill(rule.description, profile), _fill(rule.action, profile), rule.id
        )
        used.add(rule.name)

    def holder_of(rule: NamingRule) -> SegmentProfile | None:
        return profiles.get(holders[rule.id]) if rule.id in holders else None

    for segment_id, profile in remaining.items():
        rule_lost = lost.get(segment_id)
        if rule_lost is not None:
            names[segment_id] = SegmentName(
                _unique(_qualified_name(rule_lost, profile, holder_of(rule_lost), rules.qualifiers), used),
                _fill(rule_lost.description, profile),
                _fill(rule_lost.action, profile),
                rule_lost.id,
            )
            continue
        names[segment_id] = SegmentName(
            _unique(_fallback_name(profile), used),
            _fill(rules.fallback["description"], profile),
            _fill(rules.fallback["action"], profile),
            "fallback",
        )
    return dict(sorted(names.items()))
