"""Customer lifetime value from an RFM summary: the BG/NBD model of purchase counts (Fader, Hardie and
Lee 2005, "Counting your customers the easy way") and the Gamma-Gamma model of spend per purchase
(Fader and Hardie 2013, "The Gamma-Gamma model of monetary value"). Parameters are fitted by maximum
likelihood with scipy; predictions are closed form and vectorised, so a pandas UDF applies them to
every customer on the executors. Numpy and scipy only.

Per customer: `x` repeat purchases (purchases after the first), `t_x` the time from the first to the
last purchase, `observed` (T in the papers) the time from the first purchase to the end of the observation, all in one time
unit (seglib uses weeks: the published parameters are in weeks and the likelihood is better
conditioned than in days), and for spend `m` the mean value of the repeat purchases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1


class LifetimeValueFitError(ValueError):
    """The data cannot identify the model (too few customers or repeat buyers, or no convergence)."""


@dataclass(frozen=True)
class BetaGeometricNBD:
    """Purchase rate ~ Gamma(r, alpha) across customers, dropout probability after each purchase ~
    Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    customers: int

    def probability_alive(self, x: np.ndarray, t_x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """P(still active at the end of observation | x, t_x, observed) (eq. 11 of Fader, Hardie and Lee 2005)."""
        x, t_x, observed = _arrays(x, t_x, observed)
        return 1.0 / (1.0 + self._odds_of_dropout(x, t_x, observed))

    def expected_purchases(
        self, horizon: float, x: np.ndarray, t_x: np.ndarray, observed: np.ndarray
    ) -> np.ndarray:
        """E[purchases in (observed, observed + horizon] | x, t_x, observed] (eq. 10)."""
        x, t_x, observed = _arrays(x, t_x, observed)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if abs(a - 1.0) < 1e-9:
            a = 1.0 + 1e-9  # the closed form has a removable singularity at a = 1
        z = horizon / (alpha + observed + horizon)
        unconditional = (a + b + x - 1) / (a - 1)
        bracket = 1.0 - ((alpha + observed) / (alpha + observed + horizon)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1, z
        )
        return unconditional * bracket / (1.0 + self._odds_of_dropout(x, t_x, observed))

    def _odds_of_dropout(self, x: np.ndarray, t_x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        repeat = x > 0
        odds = np.zeros_like(x)
        xr = x[repeat]
        odds[repeat] = (self.a / (self.b + xr - 1)) * np.exp(
            (self.r + xr) * (np.log(self.alpha + observed[repeat]) - np.log(self.alpha + t_x[repeat]))
        )
        return odds


@dataclass(frozen=True)
class GammaGamma:
    """Spend per purchase ~ Gamma(p, nu) around a customer's own mean, nu ~ Gamma(q, gamma) across
    customers (spend independent of the purchase process)."""

    p: float
    q: float
    gamma: float
    log_likelihood: float
    customers: int

    @property
    def population_mean(self) -> float:
        """E[spend per purchase] of a customer with no repeat purchase yet (needs q > 1)."""
        return self.p * self.gamma / (self.q - 1.0)

    def expected_spend_per_purchase(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """E[M | x repeat purchases of mean m]: a weighted mean of the population mean and the customer's
        own (eq. 5 of Fader and Hardie 2013); the population mean where x = 0 or m is missing."""
        x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
        usable = (x > 0) & np.isfinite(m) & (m > 0)
        px = self.p * np.where(usable, x, 0.0)
        own = np.where(usable, m, 0.0)
        return (self.gamma + np.where(usable, x, 0.0) * own) * self.p / (px + self.q - 1.0)


def bgnbd_negative_log_likelihood(
    log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, observed: np.ndarray, weight: np.ndarray
) -> tuple[float, np.ndarray]:
    """-log L of BG/NBD (eq. 6 of Fader, Hardie and Lee 2005) and its gradient, both in the parameters'
    logarithms; `weight` counts the customers who share each (x, t_x, observed)."""
    r, alpha, a, b = np.exp(log_params)
    repeat = x > 0
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    # Alive at the end of observation, or dropped out right after the last purchase (repeat buyers only).
    alive = -(r + x) * np.log(alpha + observed)
    dropped = np.full_like(x, -np.inf)
    dropped[repeat] = np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    either = np.logaddexp(alive, dropped)
    share_alive, share_dropped = np.exp(alive - either), np.exp(dropped - either)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped_b = np.where(repeat, -1.0 / (b + x - 1), 0.0)
    gradient_terms = (
        r * (digamma(r + x) - digamma(r) + np.log(alpha) - share_alive * np.log(alpha + observed)
             - share_dropped * np.log(alpha + t_x)),
        alpha * (r / alpha - (r + x) * (share_alive / (alpha + observed) + share_dropped / (alpha + t_x))),
        a * (digamma(a + b) - digamma(a + b + x) + share_dropped / a),
        b * (digamma(b + x) - digamma(a + b + x) - digamma(b) + digamma(a + b) + share_dropped * dropped_b),
    )  # fmt: skip
    return _weighted_negative_sum(common + either, gradient_terms, weight)


def gamma_gamma_negative_log_likelihood(
    log_params: np.ndarray, x: np.ndarray, m: np.ndarray, weight: np.ndarray
) -> tuple[float, np.ndarray]:
    """-log L of Gamma-Gamma (Fader and Hardie 2013) and its gradient in the parameters' logarithms."""
    p, q, gamma = np.exp(log_params)
    px = p * x
    total = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
        + px * np.log(x) + (px - 1) * np.log(m) - (px + q) * np.log(gamma + x * m)
    )  # fmt: skip
    gradient_terms = (
        px * (digamma(px + q) - digamma(px) + np.log(x) + np.log(m) - np.log(gamma + x * m)),
        q * (digamma(px + q) - digamma(q) + np.log(gamma) - np.log(gamma + x * m)),
        gamma * (q / gamma - (px + q) / (gamma + x * m)),
    )
    return _weighted_negative_sum(total, gradient_terms, weight)


def _weighted_negative_sum(
    log_likelihoods: np.ndarray, gradient_terms: tuple[np.ndarray, ...], weight: np.ndarray
) -> tuple[float, np.ndarray]:
    """-sum of the rows' log-likelihoods and of their gradient terms, each row counted `weight` times; a
    huge value and no gradient where they are not finite, so that the optimiser steps back."""
    value = -float(np.sum(weight * log_likelihoods))
    gradient = -np.array([float(np.sum(weight * term)) for term in gradient_terms])
    if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
        return 1e300, np.zeros(len(gradient_terms))
    return value, gradient


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, observed: np.ndarray) -> BetaGeometricNBD:
    """Maximum-likelihood BG/NBD parameters (optimised on their logarithms, so they stay positive)."""
    x, t_x, observed = _arrays(x, t_x, observed)
    if len(x) < 10 or not (x > 0).any():
        raise LifetimeValueFitError(
            f"BG/NBD needs at least 10 customers and some repeat purchases; got {len(x)} customers, "
            f"{int((x > 0).sum())} with a repeat purchase"
        )
    (x_u, t_x_u, observed_u), weight = _distinct_rows(x, np.where(x > 0, t_x, 0.0), observed)
    result = _minimise(
        lambda log_params: bgnbd_negative_log_likelihood(log_params, x_u, t_x_u, observed_u, weight),
        np.zeros(4),
        "BG/NBD",
    )
    r, alpha, a, b = np.exp(result.x)
    return BetaGeometricNBD(float(r), float(alpha), float(a), float(b), -float(result.fun), len(x))


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters on the customers with repeat purchases and a positive
    mean repeat spend."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    usable = (x > 0) & np.isfinite(m) & (m > 0)
    x, m = x[usable], m[usable]
    if len(x) < 10:
        raise LifetimeValueFitError(
            f"Gamma-Gamma needs at least 10 customers with a repeat purchase of positive value; got {len(x)}"
        )
    (x_u, m_u), weight = _distinct_rows(x, m)
    start = np.log([1.0, 1.0, max(float(np.mean(m)), 1e-3)])
    result = _minimise(
        lambda log_params: gamma_gamma_negative_log_likelihood(log_params, x_u, m_u, weight),
        start,
        "Gamma-Gamma",
    )
    p, q, gamma = np.exp(result.x)
    if q <= 1.0:
        raise LifetimeValueFitError(
            f"Gamma-Gamma fitted q = {q:.3f} <= 1: the population's mean spend per purchase is not finite; "
            "spend is too heavy-tailed for the model (check for outliers or refunds counted as purchases)"
        )
    return GammaGamma(float(p), float(q), float(gamma), -float(result.fun), len(x))


# The parameters' logarithms stay within +-LOG_BOUND (e^25 ~ 7e10): a likelihood that keeps rising
# towards a boundary (Gamma-Gamma's p did on the generator's spend) stops there.
LOG_BOUND = 25.0


def _minimise(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray, model: str
) -> OptimizeResult:
    """L-BFGS-B on the analytic gradient (tens of evaluations); Nelder-Mead, then a polish, only when
    that fails to converge."""
    bounds = [(-LOG_BOUND, LOG_BOUND)] * len(start)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 1000})
    if not result.success or result.fun >= 1e299:

        def value(log_params: np.ndarray) -> float:
            return objective(log_params)[0]

        simplex = minimize(
            value,
            start,
            method="Nelder-Mead",
            bounds=bounds,
            options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
        )
        polished = minimize(objective, simplex.x, jac=True, method="L-BFGS-B", bounds=bounds)
        result = polished if polished.success and polished.fun <= simplex.fun else simplex
    if not np.all(np.isfinite(result.x)) or result.fun >= 1e299:
        raise LifetimeValueFitError(f"the {model} likelihood did not converge: {result.message}")
    return result


def _distinct_rows(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The distinct rows of the columns and how many customers share each: the likelihood is a weighted
    sum over far fewer rows than customers (whole days and counts repeat)."""
    distinct, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return tuple(distinct[:, index] for index in range(len(columns))), counts.astype(float)


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


def _arrays(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(column, dtype=float) for column in columns)
