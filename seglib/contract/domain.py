"""The business vocabulary of seglib's synthetic data: personas, domains, day parts.

Pure data, no Spark: the config validates persona names against it and the generator draws from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CATEGORIES = ("electronics", "home", "fashion", "beauty", "grocery", "sports", "toys", "books")
CHANNELS = ("web", "app", "store")
EVENT_TYPES = ("view", "search", "cart", "purchase")
REGIONS = ("north", "south", "east", "west", "central")
GENDERS = ("female", "male", "other")
# Hours of the day [start, end) of each day part; features count purchases per part.
DAYPARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))


@dataclasses.dataclass(frozen=True)
class Persona:
    """How one planted group of customers behaves. Days are counted back from the data's end date."""

    name: str
    weight: float
    orders_mean: float
    active_days: tuple[int, int]  # purchases fall between these many days before the end date
    amount_log_mean: float
    amount_log_sd: float
    quantity_mean: float
    category_weights: tuple[float, ...]  # over CATEGORIES
    channel_weights: tuple[float, ...]  # over CHANNELS
    sessions_mean: float
    browse_days: tuple[int, int]
    events_per_session: float
    event_weights: tuple[float, ...]  # over EVENT_TYPES
    age_mean: float
    signup_days: tuple[int, int]  # signup this many days before the end date
    weekend_weight: float = 0.2  # share of purchases moved to a weekend
    daypart_weights: tuple[float, ...] = (0.05, 0.35, 0.35, 0.25)  # night, morning, afternoon, evening
    discount_rate: float = 0.1  # share of purchases with a discount
    return_rate: float = 0.05  # share of lines returned later


# Personas differ in non-linear ways: loyal and bargain customers order about as often but at
# very different basket values and mixes; lapsed customers look loyal apart from *when* they bought;
# window shoppers browse more than anyone but rarely buy.
PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="loyal_high_spender", weight=0.22, orders_mean=24, active_days=(0, 365),
        amount_log_mean=4.4, amount_log_sd=0.45, quantity_mean=2.0,
        category_weights=(0.35, 0.25, 0.25, 0.05, 0.02, 0.04, 0.02, 0.02), channel_weights=(0.2, 0.7, 0.1),
        sessions_mean=14, browse_days=(0, 120), events_per_session=5, event_weights=(0.6, 0.15, 0.15, 0.10),
        age_mean=44, signup_days=(500, 700), weekend_weight=0.1, daypart_weights=(0.02, 0.38, 0.45, 0.15),
        discount_rate=0.1, return_rate=0.04,
    ),
    Persona(
        name="bargain_hunter", weight=0.26, orders_mean=22, active_days=(0, 365),
        amount_log_mean=2.6, amount_log_sd=0.40, quantity_mean=4.0,
        category_weights=(0.02, 0.08, 0.25, 0.20, 0.35, 0.04, 0.04, 0.02), channel_weights=(0.75, 0.15, 0.1),
        sessions_mean=16, browse_days=(0, 120), events_per_session=7, event_weights=(0.35, 0.45, 0.12, 0.08),
        age_mean=31, signup_days=(400, 700), weekend_weight=0.5, daypart_weights=(0.1, 0.1, 0.2, 0.6),
        discount_rate=0.6, return_rate=0.08,
    ),
    Persona(
        name="lapsed_customer", weight=0.18, orders_mean=14, active_days=(420, 700),
        amount_log_mean=3.9, amount_log_sd=0.45, quantity_mean=2.0,
        category_weights=(0.25, 0.25, 0.25, 0.05, 0.05, 0.05, 0.05, 0.05), channel_weights=(0.4, 0.3, 0.3),
        sessions_mean=0.7, browse_days=(420, 700), events_per_session=4, event_weights=(0.7, 0.1, 0.1, 0.1),
        age_mean=52, signup_days=(710, 730), weekend_weight=0.2, daypart_weights=(0.05, 0.3, 0.35, 0.3),
        discount_rate=0.2, return_rate=0.1,
    ),
    Persona(
        name="window_shopper", weight=0.20, orders_mean=4, active_days=(0, 120),
        amount_log_mean=3.4, amount_log_sd=0.40, quantity_mean=1.0,
        category_weights=(0.05, 0.10, 0.45, 0.25, 0.05, 0.05, 0.03, 0.02), channel_weights=(0.3, 0.65, 0.05),
        sessions_mean=25, browse_days=(0, 90), events_per_session=8, event_weights=(0.65, 0.15, 0.18, 0.02),
        age_mean=24, signup_days=(200, 500), weekend_weight=0.3, daypart_weights=(0.25, 0.15, 0.2, 0.4),
        discount_rate=0.3, return_rate=0.2,
    ),
    Persona(
        name="new_big_ticket", weight=0.14, orders_mean=3, active_days=(0, 50),
        amount_log_mean=5.6, amount_log_sd=0.35, quantity_mean=1.0,
        category_weights=(0.70, 0.20, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01), channel_weights=(0.6, 0.2, 0.2),
        sessions_mean=6, browse_days=(0, 60), events_per_session=6, event_weights=(0.55, 0.25, 0.12, 0.08),
        age_mean=38, signup_days=(20, 60), weekend_weight=0.2, daypart_weights=(0.05, 0.35, 0.4, 0.2),
        discount_rate=0.05, return_rate=0.03,
    ),
)  # fmt: skip


_WINDOWS = ("active_days", "browse_days", "signup_days")  # whole days


def contrasted_personas(contrast: float) -> tuple[Persona, ...]:
    """The personas with every behavioural parameter moved toward the personas' weighted average:
    1 keeps them as planted, 0 makes them alike, values in between make them overlap as real
    segments do. Names and weights stay."""
    if contrast == 1.0:
        return PERSONAS
    total = sum(persona.weight for persona in PERSONAS)

    def blend(values: list[float]) -> list[float]:
        mean = sum(persona.weight * value for persona, value in zip(PERSONAS, values, strict=True)) / total
        return [mean + contrast * (value - mean) for value in values]

    columns: dict[str, list[Any]] = {}
    for field in dataclasses.fields(Persona):
        if field.name in ("name", "weight"):
            continue
        values = [getattr(persona, field.name) for persona in PERSONAS]
        if isinstance(values[0], tuple):
            per_position = [blend(list(position)) for position in zip(*values, strict=True)]
            columns[field.name] = [tuple(row) for row in zip(*per_position, strict=True)]
        else:
            columns[field.name] = blend(values)
    for window in _WINDOWS:
        columns[window] = [tuple(round(day) for day in days) for days in columns[window]]
    return tuple(
        dataclasses.replace(persona, **{name: values[index] for name, values in columns.items()})
        for index, persona in enumerate(PERSONAS)
    )


@dataclasses.dataclass(frozen=True)
class Domain:
    """The vocabulary and purchase/browse balance of one kind of business.

    Categories are listed in the positions the personas' category weights refer to (see CATEGORIES).
    """

    categories: tuple[str, ...]
    channels: tuple[str, ...]
    orders_scale: float = 1.0
    sessions_scale: float = 1.0


DOMAINS: dict[str, Domain] = {
    "ecommerce": Domain(CATEGORIES, CHANNELS),
    "retail": Domain(
        ("electronics", "household", "apparel", "personal_care", "produce", "sports", "toys", "stationery"),
        ("store", "online", "kiosk"),
    ),
    "banking": Domain(
        (
            "electronics_stores",
            "home_improvement",
            "apparel",
            "pharmacies",
            "groceries",
            "fuel",
            "travel",
            "restaurants",
        ),
        ("card_present", "online", "contactless"),
        orders_scale=1.5,
    ),
    "mobile_app": Domain(
        ("premium_upgrade", "subscription", "skins", "boosts", "coins", "bundles", "gifts", "ad_free"),
        ("ios", "android", "web"),
        orders_scale=0.3,
        sessions_scale=2.5,
    ),
    "healthcare": Domain(
        (
            "imaging",
            "specialist",
            "dermatology",
            "pharmacy",
            "primary_care",
            "physiotherapy",
            "pediatrics",
            "dental",
        ),
        ("in_person", "telehealth", "home_visit"),
        orders_scale=0.5,
    ),
}
