"""The confidence intervals of the test figures against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.intervals import bootstrap_interval, wilson_interval


def test_wilson_interval_of_8_in_10_is_the_closed_form():
    z, n, p = 1.959963984540054, 10, 0.8  # the normal quantile of 0.975
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(8, 10) == (pytest.approx(centre - half, abs=1e-12), pytest.approx(centre + half, abs=1e-12))
    assert wilson_interval(8, 10) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    # all right: the upper bound is 1 and the lower one n / (n + z²); none: 0 and z² / (n + z²)
    assert wilson_interval(10, 10) == (pytest.approx(n / (n + z * z)), pytest.approx(1.0))
    assert wilson_interval(0, 10) == (pytest.approx(0.0, abs=1e-12), pytest.approx(z * z / (n + z * z)))
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_percentile_bootstrap_of_two_items_takes_the_extreme_resamples():
    """The mean of two items 0 and 1 resampled: 0 (both 0) or 1 (both 1) with probability 1/4 each, ½ otherwise; the
    2.5 % and 97.5 % quantiles of 1,000 resamples are then 0 and 1."""
    values = np.array([0.0, 1.0])
    assert bootstrap_interval(lambda items: values[items].mean(), 2) == (0.0, 1.0)
    # a statistic on 50 items whose resamples are all alike has a zero-width interval at its value
    assert bootstrap_interval(lambda items: 0.25, 50) == (0.25, 0.25)
    # 90 % of resampled means of 0..9 (standard error 2.87/sqrt(10) = 0.91) lie within about ±1.5 of 4.5
    low, high = bootstrap_interval(lambda items: np.arange(10.0)[items].mean(), 10, confidence=0.9)
    assert low == pytest.approx(4.5 - 1.645 * np.arange(10.0).std() / math.sqrt(10), abs=0.2)
    assert high == pytest.approx(4.5 + 1.645 * np.arange(10.0).std() / math.sqrt(10), abs=0.2)
    # the same seed, the same interval; one item: no interval
    assert bootstrap_interval(lambda items: np.arange(10.0)[items].mean(), 10, confidence=0.9) == (low, high)
    assert all(math.isnan(v) for v in bootstrap_interval(lambda items: 1.0, 1))
