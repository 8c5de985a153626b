"""Confidence intervals for the test figures: how far a figure measured on a few dozen images may be from the
value on all images like them.

Both come from SciPy: a percentile bootstrap over the test images (`bootstrap_interval`, for statistics such as
mAP that are not a mean over images) and the Wilson score interval of a proportion (`wilson_interval`, for an
accuracy). The defaults (95 %, 1,000 resamples, seed 0) are the ones every test figure of the project is logged with.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0


def bootstrap_interval(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """The percentile bootstrap interval (low, high) of `statistic` over `n` items (e.g. test images).

    `statistic(indices)` takes an int array of `n` item indices drawn with replacement (an item may repeat) and
    returns the figure computed on those items. `resamples` resamples from `numpy.random.default_rng(seed)`;
    the bounds are the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the resampled figures (Efron and
    Tibshirani, *An Introduction to the Bootstrap*, 1993, §13.3; `scipy.stats.bootstrap`, method "percentile").
    (nan, nan) for fewer than 2 items, where no interval is defined. Raises ValueError for a confidence outside (0, 1).
    """
    from scipy.stats import bootstrap

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 2:
        return float("nan"), float("nan")
    result = bootstrap(
        (np.arange(n),),
        lambda indices: float(statistic(np.asarray(indices, dtype=int))),
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilson_interval(successes: int, trials: int, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval (low, high) of the proportion `successes / trials` (e.g. an accuracy), both in
    [0, 1]: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with z the normal quantile of (1 + confidence)/2
    (Wilson 1927; `scipy.stats.binomtest(...).proportion_ci(method="wilson")`). (nan, nan) for no trials.
    Raises ValueError for successes outside [0, trials] or a confidence outside (0, 1)."""
    from scipy.stats import binomtest

    if trials == 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
