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
from scipy.special import betaln, gammaln, hyp2f1


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


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, observed: np.ndarray) -> BetaGeometricNBD:
    """Maximum-likelihood BG/NBD parameters (optimised on their logarithms, so they stay positive)."""
    x, t_x, observed = _arrays(x, t_x, observed)
    if len(x) < 10 or not (x > 0).any():
        raise LifetimeValueFitError(
            f"BG/NBD needs at least 10 customers and some repeat purchases; got {len(x)} customers, "
            f"{int((x > 0).sum())} with a repeat purchase"
        )
    repeat = x > 0

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        # Eq. 6 of Fader, Hardie and Lee (2005) in logs: alive at the end, or dropped out after the last purchase.
        r, alpha, a, b = np.exp(log_params)
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
        alive = -(r + x) * np.log(alpha + observed)
        dropped = np.full_like(x, -np.inf)
        dropped[repeat] = (
            np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
        )
        value = -float(np.sum(common + np.logaddexp(alive, dropped)))
        return value if np.isfinite(value) else 1e300

    result = _minimise(negative_log_likelihood, np.zeros(4), "BG/NBD")
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

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        p, q, gamma = np.exp(log_params)
        px = p * x
        total = (
            gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma)
            + px * np.log(x) + (px - 1) * np.log(m) - (px + q) * np.log(gamma + x * m)
        )  # fmt: skip
        value = -float(np.sum(total))
        return value if np.isfinite(value) else 1e300

    start = np.log([1.0, 1.0, max(float(np.mean(m)), 1e-3)])
    result = _minimise(negative_log_likelihood, start, "Gamma-Gamma")
    p, q, gamma = np.exp(result.x)
    if q <= 1.0:
        raise LifetimeValueFitError(
            f"Gamma-Gamma fitted q = {q:.3f} <= 1: the population's mean spend per purchase is not finite; "
            "spend is too heavy-tailed for the model (check for outliers or refunds counted as purchases)"
        )
    return GammaGamma(float(p), float(q), float(gamma), -float(result.fun), len(x))


def _minimise(objective: Callable[[np.ndarray], float], start: np.ndarray, model: str) -> OptimizeResult:
    result = minimize(
        objective,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
    )
    # A polish from the simplex's answer: Nelder-Mead stops early on flat ridges.
    polished = minimize(objective, result.x, method="L-BFGS-B")
    if polished.success and polished.fun <= result.fun:
        result = polished
    if not np.all(np.isfinite(result.x)) or result.fun >= 1e299:
        raise LifetimeValueFitError(f"the {model} likelihood did not converge: {result.message}")
    return result


def _arrays(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(column, dtype=float) for column in columns)
