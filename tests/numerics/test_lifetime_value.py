"""BG/NBD and Gamma-Gamma: the published CDNOW parameters reproduced from the raw sample through seglib's
own Spark summary, and the closed-form predictions checked against simulated customers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize

from seglib.numerics.lifetime_value import (
    BetaGeometricNBD,
    GammaGamma,
    LifetimeValueFitError,
    bgnbd_negative_log_likelihood,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_negative_log_likelihood,
    simulate_bgnbd,
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


def test_the_analytic_gradients_are_the_likelihoods_derivatives():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, 300).astype(float)
    observed = rng.uniform(10.0, 52.0, 300)
    t_x = np.where(x > 0, rng.uniform(0.0, 1.0, 300) * observed, 0.0)
    weight = rng.integers(1, 4, 300).astype(float)
    m = rng.gamma(4.0, 5.0, 300)
    repeat = x > 0
    for log_params in (np.zeros(4), np.log([0.243, 4.414, 0.793, 2.426]), np.log([3.0, 0.2, 5.0, 0.6])):
        value, gradient = bgnbd_negative_log_likelihood(log_params, x, t_x, observed, weight)
        numeric = approx_fprime(
            log_params, lambda p: bgnbd_negative_log_likelihood(p, x, t_x, observed, weight)[0], 1e-7
        )
        assert gradient == pytest.approx(numeric, rel=1e-4, abs=1e-3 * max(1.0, abs(value)) * 1e-3)
    for log_params in (np.zeros(3), np.log([6.25, 3.74, 15.44]), np.log([200.0, 2.0, 0.5])):
        value, gradient = gamma_gamma_negative_log_likelihood(
            log_params, x[repeat], m[repeat], weight[repeat]
        )
        numeric = approx_fprime(
            log_params,
            lambda p: gamma_gamma_negative_log_likelihood(p, x[repeat], m[repeat], weight[repeat])[0],
            1e-7,
        )
        assert gradient == pytest.approx(numeric, rel=1e-4, abs=1e-3 * max(1.0, abs(value)) * 1e-3)


def test_weighted_distinct_rows_give_the_likelihood_of_every_customer():
    """Customers who share (x, t_x, T) are one weighted row: same parameters as fitting each one."""
    truth = BetaGeometricNBD(r=0.5, alpha=5.0, a=0.8, b=3.0, log_likelihood=0.0, customers=0)
    x, t_x, observed, _, _ = simulate_bgnbd(truth, 5_000, 39.0, np.random.default_rng(2))
    days = np.round(t_x * 7) / 7, np.round(observed * 7) / 7  # whole days, as seglib's summary has them
    fitted = fit_bgnbd(x, *days)
    rows = np.ones(len(x))
    expanded = minimize(
        lambda p: bgnbd_negative_log_likelihood(p, x, np.where(x > 0, days[0], 0.0), days[1], rows),
        np.zeros(4), jac=True, method="L-BFGS-B",
    )  # fmt: skip
    assert fitted.log_likelihood == pytest.approx(-expanded.fun, abs=1e-4)
    assert [fitted.r, fitted.alpha, fitted.a, fitted.b] == pytest.approx(
        np.exp(expanded.x).tolist(), rel=1e-3
    )


def test_the_gradient_fit_reaches_the_optimum_a_derivative_free_search_finds():
    """Nelder-Mead (the former fit) from the same start on the same data ends no better than L-BFGS-B."""
    truth = BetaGeometricNBD(r=0.3, alpha=3.0, a=1.2, b=2.0, log_likelihood=0.0, customers=0)
    x, t_x, observed, _, _ = simulate_bgnbd(truth, 3_000, 39.0, np.random.default_rng(8))
    fitted = fit_bgnbd(x, t_x, observed)
    searched = minimize(
        lambda p: bgnbd_negative_log_likelihood(p, x, t_x, observed, np.ones(len(x)))[0],
        np.zeros(4), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
    )  # fmt: skip
    assert fitted.log_likelihood >= -searched.fun - 1e-6
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 6, 2_000).astype(float)
    means = rng.gamma(5.0, 8.0, 2_000) * (1.0 + 0.1 * rng.standard_normal(2_000)) ** 2
    spend = fit_gamma_gamma(counts, means)
    searched = minimize(
        lambda p: gamma_gamma_negative_log_likelihood(p, counts, means, np.ones(len(counts)))[0],
        np.log([1.0, 1.0, means.mean()]), method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
    )  # fmt: skip
    assert spend.log_likelihood >= -searched.fun - 1e-6
