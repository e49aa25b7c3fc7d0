"""The SLO verdict engine: known values, calibration against synthetic truth, properties.

Calibration tests draw from numpy's Generator with fixed seeds, so they are
deterministic; the tolerances are still chosen as about three Monte-Carlo standard
errors around the exact (binomial) value, so a different seed would pass as well.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

import harness.slo
import harness.slo.stats
import harness.slo.verdict
from harness.slo import (
    SloResult,
    Verdict,
    empirical_quantile,
    evaluate_error_rate,
    evaluate_latency,
    quantile_interval,
    quantile_lower_bound,
    quantile_upper_bound,
    rate_lower_bound,
    rate_upper_bound,
    samples_needed_for_quantile,
    samples_needed_for_rate,
    wilson_interval,
)
from harness.slo.stats import quantile_lower_rank, quantile_upper_rank

SEED = 20_240_607
TRIALS = 3000
# Three standard errors of a Monte-Carlo proportion near 5% over TRIALS draws.
MC_TOLERANCE = 3 * math.sqrt(0.05 * 0.95 / TRIALS)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


# --------------------------------------------------------------------------- known values


@pytest.mark.parametrize(
    ("failures", "n", "lower", "upper"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion",
        # Table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(failures: int, n: int, lower: float, upper: float) -> None:
    low, high = wilson_interval(failures, n, 0.95)
    assert (round(low, 4), round(high, 4)) == (lower, upper)


def test_wilson_zero_failures_in_a_hundred() -> None:
    # Closed form with no failures: z^2 / (n + z^2).
    z = 1.959963984540054
    assert wilson_interval(0, 100, 0.95) == pytest.approx((0.0, z * z / (100 + z * z)))
    assert wilson_interval(0, 100, 0.95)[1] == pytest.approx(0.03699, abs=1e-5)


def test_wilson_without_samples_knows_nothing() -> None:
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("failures", "n", "lower", "upper"),
    [
        # Newcombe (1998), Table I, method 5 (exact Clopper-Pearson), two-sided 95%:
        # each end is a one-sided bound at 97.5%.
        (81, 263, 0.2527, 0.3676),
        (0, 20, 0.0, 0.1684),
        (1, 29, 0.0009, 0.1776),
    ],
)
def test_clopper_pearson_matches_published_values(
    failures: int, n: int, lower: float, upper: float
) -> None:
    assert round(rate_lower_bound(failures, n, 0.975), 4) == lower
    assert round(rate_upper_bound(failures, n, 0.975), 4) == upper


def test_p99_upper_bound_from_300_samples_is_the_maximum() -> None:
    values = [float(i) for i in range(1, 301)]
    assert quantile_upper_rank(300, 0.99, 0.95) == 300
    assert quantile_upper_bound(values, 0.99, 0.95) == 300.0
    # 1 - 0.99**299 = 0.9505 still suffices, 1 - 0.99**298 = 0.9500 does not.
    assert quantile_upper_bound(values[:299], 0.99, 0.95) == 299.0
    assert quantile_upper_bound(values[:298], 0.99, 0.95) is None
    assert quantile_upper_rank(298, 0.99, 0.95) is None


def test_median_interval_of_a_hundred_samples_uses_ranks_40_and_61() -> None:
    # The textbook order-statistic interval for the median at n=100, 95%.
    values = [float(i) for i in range(1, 101)]
    assert quantile_interval(values, 0.5, 0.95) == (40.0, 61.0)


def test_ten_thousand_samples_pin_p99_to_about_p98_8_to_p99_2() -> None:
    values = np.arange(1, 10_001) / 10_000
    interval = quantile_interval(values, 0.99, 0.95)
    assert interval is not None
    assert interval[0] == pytest.approx(0.988, abs=5e-4)
    assert interval[1] == pytest.approx(0.992, abs=5e-4)


@pytest.mark.parametrize(
    ("q", "confidence", "needed"),
    [(0.99, 0.95, 299), (0.999, 0.95, 2995), (0.99, 0.99, 459), (0.5, 0.95, 5), (0.9, 0.9, 22)],
)
def test_samples_needed_for_quantile(q: float, confidence: float, needed: int) -> None:
    assert samples_needed_for_quantile(q, confidence) == needed


def test_samples_needed_for_rate_with_no_failures_is_the_rule_of_three() -> None:
    # 0 failures in n: the upper bound is 1 - 0.05**(1/n) < 1%  <=>  n >= 299.
    assert samples_needed_for_rate(0.0, 0.01, 0.95) == 299
    assert rate_upper_bound(0, 299, 0.95) < 0.01 <= rate_upper_bound(0, 298, 0.95)


def test_samples_needed_for_rate_is_none_on_the_objective() -> None:
    assert samples_needed_for_rate(0.01, 0.01, 0.95) is None


def test_docstring_examples_hold() -> None:
    for module in (harness.slo, harness.slo.stats, harness.slo.verdict):
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.attempted > 0, module.__name__
        assert outcome.failed == 0, module.__name__


# --------------------------------------------------------------------------- calibration


@pytest.mark.parametrize(("p", "n"), [(0.05, 500), (0.2, 300)])
def test_wilson_interval_covers_the_true_rate_95_percent_of_the_time(
    rng: np.random.Generator, p: float, n: int
) -> None:
    counts = rng.binomial(n, p, size=TRIALS)
    values, repeats = np.unique(counts, return_counts=True)
    intervals = [wilson_interval(int(failures), n, 0.95) for failures in values]
    covered = sum(
        int(times)
        for (lower, upper), times in zip(intervals, repeats, strict=True)
        if lower <= p <= upper
    )
    assert 0.93 <= covered / TRIALS <= 0.97


@pytest.mark.parametrize("n", [20, 100, 299, 1000])
@pytest.mark.parametrize("p", [0.001, 0.01, 0.1, 0.5])
def test_clopper_pearson_bounds_never_undercover(n: int, p: float) -> None:
    # Exact: sum the binomial probabilities of the counts whose bound misses p.
    counts = np.arange(n + 1)
    pmf = binom.pmf(counts, n, p)
    misses_low = sum(pmf[x] for x in counts if rate_upper_bound(int(x), n, 0.95) < p)
    misses_high = sum(pmf[x] for x in counts if rate_lower_bound(int(x), n, 0.95) > p)
    assert misses_low <= 0.05 + 1e-12
    assert misses_high <= 0.05 + 1e-12


@pytest.mark.parametrize(("q", "n"), [(0.9, 1000), (0.99, 3000)])
def test_quantile_interval_covers_the_true_quantile_95_percent_of_the_time(
    rng: np.random.Generator, q: float, n: int
) -> None:
    true_quantile = -math.log1p(-q)  # of the standard exponential distribution
    samples = np.sort(rng.exponential(size=(TRIALS, n)), axis=1)
    lower_rank = quantile_lower_rank(n, q, 0.975)
    upper_rank = quantile_upper_rank(n, q, 0.975)
    assert lower_rank is not None and upper_rank is not None
    # The vectorized ranks are what quantile_interval picks for each row.
    assert quantile_interval(samples[0], q, 0.95) == (
        samples[0, lower_rank - 1],
        samples[0, upper_rank - 1],
    )
    covered = (samples[:, lower_rank - 1] <= true_quantile) & (
        true_quantile <= samples[:, upper_rank - 1]
    )
    assert 0.93 <= covered.mean() <= 0.97


@pytest.mark.parametrize("n", [5, 30, 299, 1000, 5000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_quantile_bounds_never_undercover(n: int, q: float, confidence: float) -> None:
    # For continuous data, X_(k) lies above the true quantile iff fewer than k samples
    # fall below it, and that count is Binomial(n, q) whatever the distribution.
    upper = quantile_upper_rank(n, q, confidence)
    lower = quantile_lower_rank(n, q, confidence)
    if upper is not None:
        assert binom.cdf(upper - 1, n, q) >= confidence
        assert upper == 1 or binom.cdf(upper - 2, n, q) < confidence  # the tightest
    if lower is not None:
        assert binom.sf(lower - 1, n, q) >= confidence
        assert lower == n or binom.sf(lower, n, q) < confidence  # the tightest


def _fail_threshold(n: int, max_rate: float, confidence: float) -> int | None:
    """The fewest failures out of ``n`` that FAIL the SLO (FAIL is monotone in failures)."""
    if evaluate_error_rate("e", "p", n, n, max_rate, confidence).verdict is not Verdict.FAIL:
        return None
    low, high = 0, n  # low does not fail (its lower bound is 0), high does
    while high - low > 1:
        middle = (low + high) // 2
        verdict = evaluate_error_rate("e", "p", middle, n, max_rate, confidence).verdict
        if verdict is Verdict.FAIL:
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("max_rate", [0.001, 0.01, 0.05, 0.2])
@pytest.mark.parametrize("n", [20, 100, 300, 1000, 5000])
def test_error_rate_false_fails_at_most_one_minus_confidence_exactly(
    n: int, max_rate: float, confidence: float
) -> None:
    threshold = _fail_threshold(n, max_rate, confidence)
    if threshold is None:
        return  # n too small to ever fail: no false FAIL either
    before = evaluate_error_rate("e", "p", threshold - 1, n, max_rate, confidence)
    assert before.verdict is not Verdict.FAIL
    # P(FAIL) for a system right at the objective, and slightly better than it.
    for true_rate in (max_rate, 0.9 * max_rate):
        assert binom.sf(threshold - 1, n, true_rate) <= 1 - confidence


@pytest.mark.parametrize(("max_rate", "n"), [(0.01, 300), (0.01, 2000), (0.05, 500)])
@pytest.mark.parametrize("ratio", [1.0, 0.8])
def test_error_rate_false_fails_on_synthetic_traffic(
    rng: np.random.Generator, max_rate: float, n: int, ratio: float
) -> None:
    counts = rng.binomial(n, ratio * max_rate, size=TRIALS)
    values, repeats = np.unique(counts, return_counts=True)
    fails = sum(
        int(times)
        for failures, times in zip(values, repeats, strict=True)
        if evaluate_error_rate("e", "p", int(failures), n, max_rate, 0.95).verdict is Verdict.FAIL
    )
    assert fails / TRIALS <= 0.05 + MC_TOLERANCE


@pytest.mark.parametrize(("q", "n"), [(0.99, 300), (0.99, 2000), (0.5, 101)])
def test_latency_wrong_verdicts_at_the_objective_are_rare(
    rng: np.random.Generator, q: float, n: int
) -> None:
    # Exponential latencies with mean 100ms whose true q-quantile is exactly the objective:
    # FAIL and PASS are both wrong here, and each must happen at most 5% of the time.
    max_s = -0.1 * math.log1p(-q)
    samples = rng.exponential(0.1, size=(TRIALS, n))
    verdicts = [evaluate_latency("l", "p", row, q, max_s, 0.95).verdict for row in samples]
    assert verdicts.count(Verdict.FAIL) / TRIALS <= 0.05 + MC_TOLERANCE
    assert verdicts.count(Verdict.PASS) / TRIALS <= 0.05 + MC_TOLERANCE


def test_latency_false_fails_on_a_system_slightly_better_than_the_objective(
    rng: np.random.Generator,
) -> None:
    max_s = -0.1 * math.log1p(-0.99) * 1.05  # the true p99 is 5% below the objective
    samples = rng.exponential(0.1, size=(TRIALS, 1000))
    verdicts = [evaluate_latency("l", "p", row, 0.99, max_s, 0.95).verdict for row in samples]
    assert verdicts.count(Verdict.FAIL) / TRIALS <= 0.05 + MC_TOLERANCE


# --------------------------------------------------------------------------- verdicts


def test_error_rate_well_above_the_objective_fails() -> None:
    result = evaluate_error_rate("e2e-error-rate", "fault", 67, 812, 0.01, 0.95)
    assert result == SloResult(
        slo="e2e-error-rate",
        kind="errorRate",
        phase="fault",
        verdict=Verdict.FAIL,
        measured=67 / 812,
        lower=result.lower,
        upper=result.upper,
        objective=0.01,
        confidence=0.95,
        n=812,
        unit="ratio",
        message=(
            "e2e-error-rate [fault]: error rate 8.25% (one-sided 95% bounds 6.72%\u201310.0%, "
            "n=812) exceeds the objective 1.00%"
        ),
        samples_needed=None,
        p_value=result.p_value,
    )
    assert result.p_value is not None and result.p_value < 1e-30
    assert result.lower is not None and result.upper is not None
    assert 0.01 < result.lower < 67 / 812 < result.upper


def test_error_rate_clearly_below_the_objective_passes() -> None:
    result = evaluate_error_rate("errors", "baseline", 3, 2000, 0.01, 0.95)
    assert result.verdict is Verdict.PASS
    assert result.upper is not None and result.upper < 0.01
    assert result.message.endswith("is below the objective 1.00%")
    assert result.samples_needed is None


def test_undecided_error_rate_says_how_many_requests_would_decide_it() -> None:
    result = evaluate_error_rate("errors", "baseline", 2, 400, 0.01, 0.95)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.samples_needed == samples_needed_for_rate(0.005, 0.01, 0.95)
    assert result.samples_needed is not None and result.samples_needed > 400
    assert f"about {result.samples_needed} requests would decide it" in result.message
    # Holding the observed rate, that many requests do decide it.
    needed = result.samples_needed
    decided = evaluate_error_rate("errors", "baseline", needed // 200, needed, 0.01, 0.95)
    assert decided.verdict is Verdict.PASS


def test_error_rate_with_no_requests_is_inconclusive() -> None:
    result = evaluate_error_rate("e2e-error-rate", "fault", 0, 0, 0.01, 0.95)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert (result.measured, result.lower, result.upper, result.n) == (None, None, None, 0)
    assert result.samples_needed == 299
    assert result.message == (
        "e2e-error-rate [fault]: no requests were recorded in this phase; "
        "at least 299 requests are needed to show it is below 1.00%"
    )


def test_latency_well_within_the_objective_passes(rng: np.random.Generator) -> None:
    latencies = rng.exponential(0.05, size=300).tolist()
    result = evaluate_latency("p99-latency", "baseline", latencies, 0.99, 0.8, 0.95)
    assert result.verdict is Verdict.PASS
    assert (result.kind, result.unit, result.n, result.objective) == ("latency", "s", 300, 0.8)
    assert result.measured == empirical_quantile(sorted(latencies), 0.99)
    assert result.upper == max(latencies)  # 300 samples: the p99 bound is the maximum
    assert result.message.startswith("p99-latency [baseline]: p99 ")
    assert "ms (one-sided 95% bounds " in result.message
    assert result.message.endswith(", n=300) is within 800ms")


def test_latency_fails_on_a_lower_bound_even_without_an_upper_bound() -> None:
    # 50 samples cannot bound p99 from above, but 40 of them over 1s prove it is over 1s.
    latencies = [0.1] * 10 + [2.0] * 40
    result = evaluate_latency("p99-latency", "fault", latencies, 0.99, 1.0, 0.95)
    assert result.verdict is Verdict.FAIL
    assert result.upper is None
    assert result.lower == 2.0
    assert "too few samples for an upper bound" in result.message
    assert result.message.endswith("exceeds 1s")


def test_latency_with_too_few_samples_is_inconclusive_and_asks_for_more() -> None:
    result = evaluate_latency("p99-latency", "baseline", [0.01] * 100, 0.99, 0.8, 0.95)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.samples_needed == 299
    assert "about 299 samples would decide it" in result.message


def test_latency_with_no_samples_is_inconclusive() -> None:
    result = evaluate_latency("p99-latency", "fault", [], 0.99, 0.8, 0.95)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.measured is None and result.n == 0
    assert result.samples_needed == 299
    assert "no latency samples were recorded in this phase" in result.message


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: evaluate_error_rate("e", "p", 5, 4, 0.01, 0.95), "failures <= n"),
        (lambda: evaluate_error_rate("e", "p", 0, 4, 1.5, 0.95), "1% is 0.01"),
        (lambda: evaluate_error_rate("e", "p", 0, 4, 0.01, 0.4), "between 0.5 and 1"),
        (lambda: evaluate_latency("l", "p", [0.1], 99, 0.8, 0.95), "p99 is 0.99"),
        (lambda: evaluate_latency("l", "p", [float("nan")], 0.99, 0.8, 0.95), "finite"),
        (lambda: quantile_upper_bound([2.0, 1.0], 0.5, 0.9), "sorted"),
        (lambda: wilson_interval(0, 10, 1.0), "strictly between 0 and 1"),
    ],
)
def test_bad_arguments_are_refused_with_a_hint(call: Callable[[], object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        call()


# --------------------------------------------------------------------------- properties

confidences = st.floats(min_value=0.51, max_value=0.999)
quantiles = st.floats(min_value=0.01, max_value=0.99)
# Integers as floats so that ties (common in bucketed latencies) are exercised too.
latency_lists = st.lists(
    st.one_of(st.floats(0.0, 10.0), st.integers(0, 5).map(float)), min_size=1, max_size=400
).map(sorted)


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(0, 100_000))
    return draw(st.integers(0, n)), n


@settings(deadline=None)
@given(counts(), confidences, confidences)
def test_wilson_interval_properties(
    count: tuple[int, int], confidence: float, other: float
) -> None:
    failures, n = count
    lower, upper = wilson_interval(failures, n, confidence)
    assert 0.0 <= lower <= upper <= 1.0
    if n:
        assert lower <= failures / n <= upper
    narrow, wide = sorted((confidence, other))
    narrow_lower, narrow_upper = wilson_interval(failures, n, narrow)
    wide_lower, wide_upper = wilson_interval(failures, n, wide)
    assert wide_lower <= narrow_lower and narrow_upper <= wide_upper


@settings(deadline=None)
@given(counts(), confidences, confidences)
def test_clopper_pearson_bound_properties(
    count: tuple[int, int], confidence: float, other: float
) -> None:
    failures, n = count
    lower = rate_lower_bound(failures, n, confidence)
    upper = rate_upper_bound(failures, n, confidence)
    assert 0.0 <= lower <= upper <= 1.0
    if n:
        assert lower <= failures / n <= upper
    narrow, wide = sorted((confidence, other))
    assert rate_lower_bound(failures, n, wide) <= rate_lower_bound(failures, n, narrow)
    assert rate_upper_bound(failures, n, narrow) <= rate_upper_bound(failures, n, wide)


@settings(deadline=None)
@given(latency_lists, quantiles, confidences, confidences)
def test_quantile_bound_properties(
    values: list[float], q: float, confidence: float, other: float
) -> None:
    estimate = empirical_quantile(values, q)
    lower = quantile_lower_bound(values, q, confidence)
    upper = quantile_upper_bound(values, q, confidence)
    # Bounds are actual samples and bracket the point estimate.
    for bound in (lower, upper):
        assert bound is None or bound in values
    assert lower is None or lower <= estimate
    assert upper is None or estimate <= upper
    # Higher confidence never tightens a bound (a missing bound is unbounded).
    narrow, wide = sorted((confidence, other))
    narrow_upper = quantile_upper_bound(values, q, narrow)
    wide_upper = quantile_upper_bound(values, q, wide)
    assert wide_upper is None or (narrow_upper is not None and narrow_upper <= wide_upper)
    narrow_lower = quantile_lower_bound(values, q, narrow)
    wide_lower = quantile_lower_bound(values, q, wide)
    assert wide_lower is None or (narrow_lower is not None and wide_lower <= narrow_lower)
    interval = quantile_interval(values, q, confidence)
    if interval is not None:
        assert values[0] <= interval[0] <= estimate <= interval[1] <= values[-1]


@settings(deadline=None)
@given(quantiles, confidences)
def test_samples_needed_for_quantile_is_the_first_n_with_both_bounds(
    q: float, confidence: float
) -> None:
    needed = samples_needed_for_quantile(q, confidence)
    assert quantile_upper_rank(needed, q, confidence) is not None
    assert quantile_lower_rank(needed, q, confidence) is not None
    if needed > 1:
        fewer = needed - 1
        assert (
            quantile_upper_rank(fewer, q, confidence) is None
            or quantile_lower_rank(fewer, q, confidence) is None
        )


@settings(deadline=None)
@given(
    st.floats(0.0, 0.5),
    st.floats(0.001, 0.5),
    st.sampled_from([0.9, 0.95, 0.99]),
)
def test_samples_needed_for_rate_decides_if_the_rate_holds(
    observed: float, objective: float, confidence: float
) -> None:
    needed = samples_needed_for_rate(observed, objective, confidence)
    if observed == objective:
        assert needed is None
        return
    if needed is None or needed > 10**8:
        return  # too close to the objective for any practical run
    # Round the failure count in the favourable direction: bounds are monotone in it.
    if observed < objective:
        failures = math.floor(observed * needed)
        assert rate_upper_bound(failures, needed, confidence) < objective
    else:
        failures = math.ceil(observed * needed)
        assert rate_lower_bound(min(failures, needed), needed, confidence) > objective


def test_a_zero_objective_can_never_pass_and_says_so() -> None:
    clean = evaluate_error_rate("no-errors", "fault", 0, 100_000, 0.0, 0.95)
    assert clean.verdict is Verdict.INCONCLUSIVE and clean.samples_needed is None
    assert "a max of 0% can never PASS with any finite sample" in clean.message
    assert "e.g. 0.1% (2995 clean requests PASS it)" in clean.message
    one = evaluate_error_rate("no-errors", "fault", 1, 100_000, 0.0, 0.95)
    assert one.verdict is Verdict.FAIL and one.p_value == 0.0  # a rate of 0 never fails
    empty = evaluate_error_rate("no-errors", "fault", 0, 0, 0.0, 0.95)
    assert "can never PASS" in empty.message
