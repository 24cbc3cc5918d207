"""Lifetime-value fit on the driver: the former derivative-free search against the gradient fit.

    .venv/bin/python bench/lifetime_value_fit.py [--sizes 2000,20000,200000] [--former-max 20000]

Customers are drawn from the BG/NBD story (CDNOW-like parameters, whole days as seglib's summary has
them) with Gamma-Gamma spend; at each size both models are fitted
(a) as seglib fits them now: L-BFGS-B on the analytic gradient over the distinct (x, t_x, T) rows,
    each weighted by its customers (`seglib.numerics.lifetime_value`);
(b) as seglib fitted them before: Nelder-Mead (xatol = fatol = 1e-8, at most 20,000 iterations and
    40,000 evaluations) over every customer, then an L-BFGS-B polish on numerical differences; only up
    to --former-max customers (at 200,000, the clv.fit_sample_customers default, it ran for more than ten minutes).
Prints seconds and log-likelihoods side by side. Last line: RESULT with the speed-ups at the largest
size both ran and the gradient fit's seconds at the largest size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from seglib.numerics.lifetime_value import (
    BetaGeometricNBD,
    bgnbd_negative_log_likelihood,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_negative_log_likelihood,
    simulate_bgnbd,
)

CDNOW_LIKE = BetaGeometricNBD(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=0.0, customers=0)


def former_fit(value: Callable[[np.ndarray], float], start: np.ndarray) -> float:
    """The log-likelihood the former search reached."""
    result = minimize(
        value,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20_000, "maxfev": 40_000},
    )
    polished = minimize(value, result.x, method="L-BFGS-B")
    return -min(result.fun, polished.fun if polished.success else np.inf)


def customers(size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    x, t_x, observed, _, _ = simulate_bgnbd(CDNOW_LIKE, size, 39.0, rng)
    t_x, observed = np.where(x > 0, np.round(t_x * 7) / 7, 0.0), np.round(observed * 7) / 7
    rate = rng.gamma(3.74, 1.0 / 15.44, size)
    spend = np.array(
        [
            rng.gamma(6.25, 1.0 / nu, int(count)).mean() if count else np.nan
            for nu, count in zip(rate, x, strict=True)
        ]
    )
    return x, t_x, observed, spend


def fits(
    x: np.ndarray, t_x: np.ndarray, observed: np.ndarray, spend: np.ndarray
) -> dict[str, tuple[Callable[[], float], Callable[[], float]]]:
    """Per model: the fit now and the former fit, each returning the log-likelihood reached."""
    repeat = x > 0
    every = np.ones(len(x))
    x_r, spend_r, every_r = x[repeat], spend[repeat], every[repeat]
    return {
        "BG/NBD": (
            lambda: fit_bgnbd(x, t_x, observed).log_likelihood,
            lambda: former_fit(
                lambda p: bgnbd_negative_log_likelihood(p, x, t_x, observed, every)[0], np.zeros(4)
            ),
        ),
        "Gamma-Gamma": (
            lambda: fit_gamma_gamma(x, spend).log_likelihood,
            lambda: former_fit(
                lambda p: gamma_gamma_negative_log_likelihood(p, x_r, spend_r, every_r)[0],
                np.log([1.0, 1.0, float(np.mean(spend_r))]),
            ),
        ),
    }


def timed(action: Callable[[], float]) -> tuple[float, float]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,20000,200000")
    parser.add_argument("--former-max", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    speedups: dict[str, float] = {}
    seconds_now: dict[str, float] = {}
    print(
        f"{'customers':>10} {'model':<12} {'now s':>8} {'before s':>9} {'speed-up':>9} {'LL now':>14} {'LL before':>14}"
    )
    for size in (int(value) for value in args.sizes.split(",")):
        for model, (now, before) in fits(*customers(size, rng)).items():
            now_seconds, now_ll = timed(now)
            seconds_now[model] = now_seconds
            if size <= args.former_max:
                before_seconds, before_ll = timed(before)
                speedups[model] = before_seconds / now_seconds
                print(
                    f"{size:>10} {model:<12} {now_seconds:>8.2f} {before_seconds:>9.2f} "
                    f"{speedups[model]:>9.1f} {now_ll:>14.2f} {before_ll:>14.2f}"
                )
            else:
                print(
                    f"{size:>10} {model:<12} {now_seconds:>8.2f} {'-':>9} {'-':>9} {now_ll:>14.2f} {'-':>14}"
                )
    print(
        f"RESULT bgnbd_speedup={speedups.get('BG/NBD', float('nan')):.1f} "
        f"gamma_gamma_speedup={speedups.get('Gamma-Gamma', float('nan')):.1f} "
        f"bgnbd_seconds_largest={seconds_now['BG/NBD']:.2f} gamma_gamma_seconds_largest={seconds_now['Gamma-Gamma']:.2f}"
    )


if __name__ == "__main__":
    main()
