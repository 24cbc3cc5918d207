"""Segment names: the built-in rules (relative bars and lifecycle states), shared rules, custom files,
and the lifecycle names of a tiny transactions-only log run through seglib's own features and profiles."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from seglib.contract.errors import ConfigError
from seglib.features.spec import FeatureSettings
from seglib.features.transactions import transaction_feature_specs, transaction_features
from seglib.segments.naming import load_naming_rules, name_segments
from seglib.segments.profiles import FeatureStat, SegmentProfile, collect_profiles, segment_profiles


def profile(segment_id: int, share: float, medians: dict[str, float] | None = None, **std_diffs: float):
    """A profile whose features have population mean 100 and sd 10; `medians` sets segment medians."""
    features = {
        name: FeatureStat(
            100 + 10 * value,
            100.0,
            value,
            abs(value) > 0.2,
            (100 + 10 * value) / 100,
            (medians or {}).get(name, 100 + 10 * value),
        )
        for name, value in std_diffs.items()
    }
    return SegmentProfile(segment_id, int(1000 * share), share, features)


def test_names_follow_the_built_in_rules():
    rules = load_naming_rules(None)
    profiles = {
        0: profile(0, 0.3, discount_share=1.4, monetary_365d=0.1, frequency_365d=0.3, recency_days=-0.1),
        1: profile(
            1,
            0.2,
            {"frequency": 9, "recency_days": 12},
            monetary_365d=1.3,
            frequency_365d=1.1,
            frequency=1.0,
            recency_days=-0.6,
            discount_share=-0.2,
        ),
        2: profile(
            2, 0.2, {"recency_days": 400, "frequency": 6}, recency_days=2.0, monetary_total=0.1, frequency=0.0
        ),
        3: profile(3, 0.1, discount_share=0.9, monetary_365d=-0.1),  # a weaker deal seeker
        4: profile(4, 0.2, weekend_share=0.15),  # nothing significant, no rule met
    }
    names = name_segments(profiles, rules)
    assert names[0].name == "Deal seekers" and names[0].rule == "deal_seekers"
    assert names[1].name == "Loyal high spenders"
    assert names[2].name == "Lapsing valuable customers"
    assert names[0].description.startswith("Buy mostly on promotion: 114 of their orders")
    # The stronger deal seeker gets the name; the weaker one, meeting no later rule, the rule's name
    # made unique (no other feature sets it a quarter of a standard deviation apart from the holder).
    assert names[3].rule == "deal_seekers" and names[3].name == "Deal seekers (2)"
    assert names[4].name == "Average customers" and names[4].rule == "fallback"
    assert len({name.name for name in names.values()}) == 5
    assert all(name.action for name in names.values())


def test_a_segment_that_loses_a_rule_keeps_it_qualified_by_its_most_distinctive_other_feature():
    one_time = {"frequency": 1, "recency_days": 240}
    profiles = {
        0: profile(0, 0.5, one_time, frequency=-0.6, recency_days=0.5, monetary_mean=-0.4, weekend_share=1.9),
        1: profile(1, 0.3, one_time, frequency=-0.5, recency_days=0.4, monetary_mean=1.6, weekend_share=1.9),
        2: profile(2, 0.2, {"frequency": 8, "recency_days": 20}, frequency=1.5, recency_days=-1.2),
    }
    names = name_segments(profiles, load_naming_rules(None))
    # Both one-time segments are lapsed; segment 0 clears the recency bar by more and takes the plain name.
    assert names[0].name == "One-time buyers, lapsed" and names[0].rule == "one_time_lapsed"
    assert names[1].name == "Occasional buyers"  # a later rule it meets comes first
    assert names[2].name == "Active repeat customers"
    without_occasional = load_naming_rules(None).model_copy(
        update={"rules": [rule for rule in load_naming_rules(None).rules if rule.id != "occasional_buyers"]}
    )
    names = name_segments(profiles, without_occasional)
    # Qualified by what sets it apart from the segment holding the name (spend, +2 sd), not by its own
    # most distinctive feature (weekend share, which both share).
    assert names[1].name == "One-time buyers, lapsed, high monetary mean"
    assert names[1].rule == "one_time_lapsed" and "Bought once" in names[1].description

    # Segment 1 now buys on weekdays: weekend share sets it further apart (-3.8 sd) than spend (+2 sd),
    # but spend is among the rules file's qualifiers and a sparse weekend share is not.
    profiles[1] = profile(
        1, 0.3, one_time, frequency=-0.5, recency_days=0.4, monetary_mean=1.6, weekend_share=-1.9
    )
    assert (
        name_segments(profiles, without_occasional)[1].name == "One-time buyers, lapsed, high monetary mean"
    )
    no_preference = without_occasional.model_copy(update={"qualifiers": []})
    assert name_segments(profiles, no_preference)[1].name == "One-time buyers, lapsed, low weekend share"


def test_customers_without_a_purchase_are_prospects_not_lapsing_buyers():
    """Never-buyers carry the recency cap, which alone would read as 'long since the last purchase'."""
    profiles = {
        0: profile(0, 0.3, {"has_purchases": 0.0, "recency_days": 730, "frequency": 0}, recency_days=2.2,
                   frequency=-0.9, monetary_total=-0.2),
        1: profile(1, 0.7, {"frequency": 3, "recency_days": 40}, recency_days=-0.6, frequency=0.3),
    }  # fmt: skip
    profiles[0].features["has_purchases"] = FeatureStat(0.1, 0.73, -2.5, True, 0.14, 0.0)
    profiles[1].features["has_purchases"] = FeatureStat(1.0, 0.73, 0.6, True, 1.37, 1.0)
    names = name_segments(profiles, load_naming_rules(None))
    assert names[0].name == "Prospects without a purchase" and names[0].rule == "prospects"
    assert "win-back" in names[0].action
    assert names[1].name == "Active repeat customers"


def test_custom_rules_file_names_segments_and_a_broken_one_is_refused(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - id: night_owls\n    name: Night owls\n    when: [{feature: daypart_night_share, above: 0.5}]\n"
        "    description: '{daypart_night_share} of purchases at night (all: {daypart_night_share_population})'\n"
        "    action: Send offers after 22:00.\n"
        "  - id: big_baskets\n    name: Big baskets\n    when: [{feature: basket_size, median_at_least: 5}]\n"
        "    description: '{basket_size} items'\n    action: Bundle.\n"
        "fallback: {description: 'Other: {top_features}', action: Review.}\n"
    )
    names = name_segments(
        {
            0: profile(0, 0.4, daypart_night_share=1.0),
            1: profile(1, 0.3, age=-0.9),
            2: profile(2, 0.3, {"basket_size": 6.0}, basket_size=0.1),
        },
        load_naming_rules(str(path)),
    )
    assert names[0].name == "Night owls" and names[0].description == "110 of purchases at night (all: 100)"
    assert names[1].name == "Low age" and names[1].description == "Other: age low"
    assert names[2].name == "Big baskets"  # an absolute bar needs no significant difference
    path.write_text(
        "rules:\n  - id: x\n    name: X\n    when: [{feature: age}]\n    description: d\n    action: a\nfallback: {}\n"
    )
    with pytest.raises(ConfigError, match="needs exactly one of above, below, median_at_least"):
        load_naming_rules(str(path))


SNAPSHOT = dt.date(2025, 6, 30)


def lifecycle_log(spark):
    """Eight customers in each of five lifecycle states, dates only (no time of day, no categories)."""
    rows: list[tuple[str, str, dt.datetime, float]] = []

    def buys(state: str, index: int, days_ago: list[int], amount: float) -> None:
        for days in days_ago:
            moment = dt.datetime.combine(SNAPSHOT - dt.timedelta(days=days + index), dt.time())
            rows.append((state, f"{state}-{index}", moment, amount + index))

    for index in range(8):
        buys("new", index, [5, 20], 25.0)  # first purchase within the last month
        buys("active_repeat", index, [10, 70, 130, 190], 30.0)
        buys("loyal", index, [3, *range(20, 400, 30)], 200.0)  # 14 purchases a year, big ones
        buys("lapsing", index, list(range(150, 400, 30)), 80.0)  # 9 purchases, none in 150 days
        buys("one_time_lapsed", index, [250], 20.0)
    return spark.createDataFrame(rows, "state string, customer_id string, timestamp timestamp, amount double")


def test_lifecycle_names_on_a_transactions_only_log(spark):
    log = lifecycle_log(spark)
    transactions = log.drop("state")
    settings = FeatureSettings(snapshot=SNAPSHOT, time_of_day=False)
    features = transaction_features(transactions, settings)
    states = log.select("customer_id", "state").distinct()
    order = ["new", "active_repeat", "loyal", "lapsing", "one_time_lapsed"]
    segment_of = F.create_map(
        *[item for index, state in enumerate(order) for item in (F.lit(state), F.lit(index))]
    )
    members = features.join(states, "customer_id").withColumn("segment_id", segment_of[F.col("state")])
    feature_names = [spec.name for spec in transaction_feature_specs(transactions.columns, settings)]
    profiles = collect_profiles(segment_profiles(members, feature_names))

    names = {
        order[segment]: name for segment, name in name_segments(profiles, load_naming_rules(None)).items()
    }
    assert {state: name.rule for state, name in names.items()} == {
        "new": "new_customers",
        "active_repeat": "active_repeat",
        "loyal": "loyal_high_spenders",
        "lapsing": "lapsing_valuable",
        "one_time_lapsed": "one_time_lapsed",
    }
    assert names["one_time_lapsed"].name == "One-time buyers, lapsed"
    assert names["one_time_lapsed"].description.startswith("Bought once (1.00 orders on average")
    assert "days ago" in names["new"].description and "fallback" not in {name.rule for name in names.values()}
