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
from seglib.segments.profiles import SegmentProfile, readable_number

log = logging.getLogger(__name__)


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
