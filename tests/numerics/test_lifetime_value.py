"""BG/NBD and Gamma-Gamma: the published CDNOW parameters reproduced from the raw sample through seglib's
own Spark summary, and the closed-form predictions checked against simulated customers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from seglib.numerics.lifetime_value import (
    BetaGeometricNBD,
    GammaGamma,
    LifetimeValueFitError,
    fit_bgnbd,
    fit_gamma_gamma,
)

CDNOW_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "cdnow_sample.txt"
CALIBRATION_END = dt.date(1997, 9, 30)  # 39 weeks after 1997-01-01


def cdnow_rows() -> list[tuple[str, dt.datetime, float]]:
    rows = []
    for line in CDNOW_SAMPLE.read_text().splitlines():
        _, customer, day, _, amount = line.split()
        rows.append((customer, dt.datetime.strptime(day, "%Y%m%d"), float(amount)))
    return rows


def test_the_published_cdnow_parameters_are_reproduced_from_the_raw_sample(spark):
    """Fader, Hardie and Lee (2005): r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 (weeks); Fader and
    Hardie (2013): p = 6.25, q = 3.74, gamma = 15.44 on the 946 repeat buyers. Within 2%."""
    from seglib.features.lifetime_value import fit_lifetime_value, purchase_summary

    transactions = spark.createDataFrame(
        cdnow_rows(), "customer_id string, timestamp timestamp, amount double"
    )
    cutoff = dt.datetime.combine(CALIBRATION_END + dt.timedelta(days=1), dt.time())
    summary = purchase_summary(transactions, CALIBRATION_END, cutoff)
    rows = {row["customer_id"]: row for row in summary.collect()}
    assert len(rows) == 2357 and sum(1 for row in rows.values() if row["repeat_purchases"] > 0) == 946
    # Customer 0001 bought on 1997-01-01, 01-18 and 08-02 before the end of the calibration period.
    first = rows["0001"]
    assert (first["repeat_purchases"], first["observed_weeks"]) == (2.0, pytest.approx(272 / 7))
    assert first["purchase_span_weeks"] == pytest.approx(213 / 7)
    assert first["repeat_spend_mean"] == pytest.approx((29.73 + 14.96) / 2)
    fit = fit_lifetime_value(summary, sample_customers=10_000, seed=1)
    assert fit.status == "fitted" and fit.purchases is not None and fit.spend is not None
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "gamma": 15.44}
    fitted = {name: getattr(fit.purchases, name, None) or getattr(fit.spend, name) for name in published}
    assert fitted == {name: pytest.approx(value, rel=0.02) for name, value in published.items()}
    assert fit.purchases.log_likelihood == pytest.approx(-9582.4, abs=0.5)  # the paper's LL
    # The paper's worked example: 2 repeat purchases, the last at week 30.43 of 38.86, expects 1.226
    # purchases in the next 39 weeks.
    expected = fit.purchases.expected_purchases(39.0, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert expected[0] == pytest.approx(1.226, abs=0.002)


def simulate_bgnbd(
    model: BetaGeometricNBD, customers: int, horizon: float, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Customers from the BG/NBD story: a first purchase at 0, Poisson repeat purchases at a Gamma rate,
    and after each repeat purchase a Beta-distributed chance of dropping out for good. Returns x, t_x,
    the end of observation, whether each is alive at that end, and the purchases in (end, end + horizon]."""
    rate = rng.gamma(model.r, 1.0 / model.alpha, customers)
    dropout = rng.beta(model.a, model.b, customers)
    end = rng.uniform(20.0, 52.0, customers)
    x, t_x, future = np.zeros(customers), np.zeros(customers), np.zeros(customers)
    now = np.zeros(customers)
    alive = np.ones(customers, dtype=bool)
    alive_at_end = np.ones(customers, dtype=bool)
    while alive.any():
        now = np.where(alive, now + rng.exponential(1.0 / rate), now)
        in_window = alive & (now <= end)
        upcoming = alive & (now > end) & (now <= end + horizon)
        x += in_window
        t_x = np.where(in_window, now, t_x)
        future += upcoming
        alive &= now <= end + horizon
        died = alive & (rng.random(customers) < dropout)
        alive_at_end &= ~(died & (now <= end))
        alive &= ~died
    return x, t_x, end, alive_at_end, future


def test_bgnbd_predictions_match_simulated_customers_and_the_fit_recovers_the_truth():
    truth = BetaGeometricNBD(r=0.5, alpha=5.0, a=0.8, b=3.0, log_likelihood=0.0, customers=0)
    x, t_x, observed, alive_at_end, future = simulate_bgnbd(truth, 40_000, 39.0, np.random.default_rng(7))
    expected = truth.expected_purchases(39.0, x, t_x, observed)
    assert expected.mean() == pytest.approx(future.mean(), rel=0.03)
    # Conditional, not only on average: buyers with many repeat purchases are predicted apart.
    heavy = x >= 5
    assert expected[heavy].mean() == pytest.approx(future[heavy].mean(), rel=0.05)
    assert truth.probability_alive(x, t_x, observed).mean() == pytest.approx(alive_at_end.mean(), abs=0.01)
    fitted = fit_bgnbd(x, t_x, observed)
    assert (fitted.r, fitted.alpha, fitted.a, fitted.b) == (
        pytest.approx(0.5, rel=0.1), pytest.approx(5.0, rel=0.1), pytest.approx(0.8, rel=0.15), pytest.approx(3.0, rel=0.2),
    )  # fmt: skip


def test_gamma_gamma_shrinks_each_customers_mean_towards_the_population_and_beats_the_raw_mean():
    rng = np.random.default_rng(3)
    p, q, gamma = 6.0, 4.0, 15.0
    customers = 20_000
    nu = rng.gamma(q, 1.0 / gamma, customers)
    x = rng.integers(1, 8, customers).astype(float)
    m = np.array([rng.gamma(p, 1.0 / rate, int(count)).mean() for rate, count in zip(nu, x, strict=True)])
    fitted = fit_gamma_gamma(x, m)
    assert (fitted.p, fitted.q, fitted.gamma) == (
        pytest.approx(p, rel=0.1), pytest.approx(q, rel=0.1), pytest.approx(gamma, rel=0.15),
    )  # fmt: skip
    true_mean = p / nu
    predicted = fitted.expected_spend_per_purchase(x, m)
    assert np.mean((predicted - true_mean) ** 2) < 0.8 * np.mean((m - true_mean) ** 2)
    # No repeat purchase: the population mean p * gamma / (q - 1).
    newcomer = fitted.expected_spend_per_purchase(np.array([0.0]), np.array([np.nan]))
    assert (
        newcomer[0] == pytest.approx(fitted.population_mean) == pytest.approx(p * gamma / (q - 1), rel=0.15)
    )


def test_data_that_cannot_identify_the_models_is_refused_with_the_reason():
    with pytest.raises(LifetimeValueFitError, match="some repeat purchases; got 50 customers, 0 with"):
        fit_bgnbd(np.zeros(50), np.zeros(50), np.full(50, 10.0))
    with pytest.raises(LifetimeValueFitError, match="at least 10 customers with a repeat purchase"):
        fit_gamma_gamma(np.array([1.0, 2.0, 0.0]), np.array([5.0, 7.0, np.nan]))
    model = GammaGamma(p=2.0, q=0.5, gamma=1.0, log_likelihood=0.0, customers=1)
    assert model.p == 2.0  # a model object with q <= 1 can exist; fitting one is what is refused
