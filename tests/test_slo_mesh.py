"""The latency-shift and mesh SLO verdicts: known values, calibration, properties, journals.

Calibration draws from numpy's Generator with fixed seeds, so it is deterministic; the
tolerances are still about three Monte-Carlo standard errors, so another seed passes too.
The mesh verdicts read hand-built journals: they are pure functions of the journal.
"""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from journals import new_journal, phase_windows
from scipy.stats import lognorm, mannwhitneyu

import harness.slo.shift
import harness.slo.stats
from harness.journal import (
    EdgeSeries,
    EdgeStats,
    FaultEntry,
    Journal,
    LoadTimeline,
    MeshTimeline,
)
from harness.load.driver import Sample
from harness.scenario import load_scenario_text
from harness.slo import (
    Verdict,
    evaluate_ejections,
    evaluate_latency_shift,
    evaluate_recovery,
    evaluate_retry_amplification,
    evaluate_sheds,
    hodges_lehmann_shift,
    recovery_phases,
)
from harness.slo.judge import judge_slos
from harness.slo.mesh import EJECTIONS
from harness.slo.stats import (
    difference_order_statistics,
    mann_whitney_cdf,
    samples_needed_for_shift,
    shift_bound_rank,
)

SEED = 20_240_611
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def mc_tolerance(p: float, trials: int) -> float:
    """Three standard errors of a Monte-Carlo proportion."""
    return 3 * math.sqrt(p * (1 - p) / trials)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


# --------------------------------------------------------------------------- known values


def test_docstring_examples_hold() -> None:
    for module in (harness.slo.stats, harness.slo.shift):
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.attempted > 0, module.__name__
        assert outcome.failed == 0, module.__name__


@pytest.mark.parametrize(("n", "critical_u"), [(5, 4), (8, 15), (10, 27), (20, 138)])
def test_bound_rank_matches_published_mann_whitney_critical_values(n: int, critical_u: int) -> None:
    # One-tailed 5% critical values of U for equal samples (e.g. Siegel & Castellan,
    # Nonparametric Statistics, Table J): the bound is the next difference up.
    assert shift_bound_rank(n, n, CONFIDENCE) == critical_u + 1


@pytest.mark.parametrize(("n", "m"), [(3, 5), (10, 12), (30, 40), (7, 60), (100, 100)])
def test_exact_u_distribution_matches_scipy(rng: np.random.Generator, n: int, m: int) -> None:
    for _ in range(3):
        x, y = rng.normal(size=n), rng.normal(0.3, size=m)
        u = int(np.sum(x[:, None] > y[None, :]))
        expected = mannwhitneyu(x, y, method="exact", alternative="less").pvalue
        assert mann_whitney_cdf(u, n, m) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_too_few_samples_give_no_bounds_but_an_estimate() -> None:
    assert shift_bound_rank(2, 2, CONFIDENCE) is None
    shift = hodges_lehmann_shift([1.0, 2.0], [4.0, 6.0], CONFIDENCE)
    assert (shift.estimate, shift.lower, shift.upper) == (3.5, None, None)


@pytest.mark.parametrize("sample", [7, 64])
def test_selection_with_tiny_samples_is_still_exact(
    rng: np.random.Generator, sample: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny samples make many narrow or failed brackets: the invariant keeps it exact."""
    monkeypatch.setattr(harness.slo.stats, "SELECTION_SAMPLE", sample)
    for x, y in [
        (rng.lognormal(-4, 0.5, 300), rng.lognormal(-4, 0.5, 250)),
        (np.round(rng.lognormal(2, 0.5, 300)), np.round(rng.lognormal(2, 0.5, 250)) + 1),
    ]:
        pairs = x.size * y.size
        ranks = [1, 2, 997, pairs // 2, pairs // 2 + 1, pairs - 1, pairs]
        expected = np.sort(np.subtract.outer(y, x).ravel())
        counted = difference_order_statistics(x, y, ranks, materialize_max_pairs=0)
        assert counted == [float(expected[rank - 1]) for rank in ranks]


def test_a_thousand_by_a_thousand_is_exact_on_both_paths(rng: np.random.Generator) -> None:
    # Above MATERIALIZE_MAX_PAIRS the order statistics are found by counting: same values.
    x, y = rng.lognormal(-4, 0.5, size=1200), rng.lognormal(-4, 0.5, size=1000) + 0.002
    ranks = [1, 17, 300_000, 600_000, 600_001, 1_199_999, 1_200_000]
    partitioned = difference_order_statistics(x, y, ranks, materialize_max_pairs=10**7)
    counted = difference_order_statistics(x, y, ranks, materialize_max_pairs=0)
    assert counted == partitioned
    shift = hodges_lehmann_shift(x, y, CONFIDENCE)
    assert shift.estimate == pytest.approx(0.002, abs=0.0015)
    assert shift.lower is not None and shift.upper is not None
    assert shift.lower < shift.estimate < shift.upper


# --------------------------------------------------------------------------- calibration


def shifted_pairs(
    rng: np.random.Generator,
    draw: Callable[[np.random.Generator, int], np.ndarray],
    n: int,
    m: int,
    shift: float,
    trials: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(draw(rng, n), draw(rng, m) + shift) for _ in range(trials)]


def lognormal(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.lognormal(np.log(0.02), 0.6, size=size)  # about 20 ms, a long right tail


def exponential(rng: np.random.Generator, size: int) -> np.ndarray:
    return 0.005 + rng.exponential(0.01, size=size)


def whole_milliseconds(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.round(rng.lognormal(np.log(6.0), 0.5, size=size)) / 1000.0  # many ties


@pytest.mark.parametrize(
    ("draw", "n", "m", "trials", "exact"),
    [
        (lognormal, 40, 50, 2000, True),
        (exponential, 250, 250, 2000, False),  # 62,500 pairs: the normal approximation
    ],
)
def test_shift_bounds_cover_the_true_shift_at_the_nominal_rate(
    rng: np.random.Generator,
    draw: Callable[[np.random.Generator, int], np.ndarray],
    n: int,
    m: int,
    trials: int,
    exact: bool,
) -> None:
    true_shift = 0.015
    below = above = 0
    for x, y in shifted_pairs(rng, draw, n, m, true_shift, trials):
        shift = hodges_lehmann_shift(x, y, CONFIDENCE)
        assert shift.exact is exact
        assert shift.lower is not None and shift.upper is not None
        below += shift.upper < true_shift
        above += shift.lower > true_shift
    # The two one-sided 95% bounds form a 90% interval; within 2 points of it, and each
    # side misses at most 5% (plus Monte-Carlo noise).
    coverage = 1 - (below + above) / trials
    assert abs(coverage - (2 * CONFIDENCE - 1)) <= 0.02
    for misses in (below, above):
        assert misses / trials <= ALPHA + mc_tolerance(ALPHA, trials)


def test_ties_from_whole_milliseconds_keep_the_bounds_conservative(
    rng: np.random.Generator,
) -> None:
    trials, true_shift = 1000, 0.003
    misses = 0
    for x, y in shifted_pairs(rng, whole_milliseconds, 60, 60, true_shift, trials):
        shift = hodges_lehmann_shift(x, y, CONFIDENCE)
        assert shift.lower is not None and shift.upper is not None
        # Equal to the truth counts as covered: ties put whole blocks of differences there.
        misses += (shift.upper < true_shift - 1e-12) + (shift.lower > true_shift + 1e-12)
    assert misses / trials <= 2 * ALPHA + mc_tolerance(2 * ALPHA, trials)


def test_a_shift_exactly_at_the_objective_rarely_fails_or_passes(
    rng: np.random.Generator,
) -> None:
    # The worst case for both error rates: the true shift sits on the objective.
    trials, objective = 2000, 0.010
    verdicts = [
        evaluate_latency_shift("shift", "fault", "baseline", x, y, objective, CONFIDENCE).verdict
        for x, y in shifted_pairs(rng, lognormal, 60, 60, objective, trials)
    ]
    tolerance = mc_tolerance(ALPHA, trials)
    assert verdicts.count(Verdict.FAIL) / trials <= ALPHA + tolerance
    assert verdicts.count(Verdict.PASS) / trials <= ALPHA + tolerance


def test_a_clear_shift_is_decided(rng: np.random.Generator) -> None:
    x, y = lognormal(rng, 400), lognormal(rng, 400) + 0.050
    slow = evaluate_latency_shift("shift", "fault", "baseline", x, y, 0.020, CONFIDENCE)
    assert slow.verdict is Verdict.FAIL
    assert slow.lower is not None and slow.lower > 0.020
    fast = evaluate_latency_shift("shift", "fault", "baseline", x, y, 0.080, CONFIDENCE)
    assert fast.verdict is Verdict.PASS
    assert "Hodges–Lehmann" in fast.message and "exact" not in fast.message


def lognormal_grid(size: int) -> np.ndarray:
    """Evenly spaced quantiles of the lognormal above: a sample without sampling noise."""
    return np.asarray(lognorm.ppf((np.arange(size) + 0.5) / size, 0.6, scale=0.02))


def test_an_undecided_shift_says_how_many_samples_would_decide_it() -> None:
    x = lognormal_grid(30)
    result = evaluate_latency_shift("shift", "fault", "baseline", x, x + 0.004, 0.008, CONFIDENCE)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.measured == pytest.approx(0.004)
    assert result.samples_needed is not None and result.samples_needed > 30
    assert f"about {result.samples_needed} latencies per phase" in result.message
    # With that many per phase (and the same shift) the upper bound is below 8 ms.
    x = lognormal_grid(result.samples_needed)
    decided = evaluate_latency_shift("shift", "fault", "baseline", x, x + 0.004, 0.008, CONFIDENCE)
    assert decided.verdict is Verdict.PASS


def test_no_latencies_in_a_phase_is_inconclusive() -> None:
    result = evaluate_latency_shift("shift", "fault", "baseline", [0.01] * 5, [], 0.01, 0.95)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.measured is None
    assert "no successful latencies in fault" in result.message
    assert result.samples_needed == 3


def test_samples_needed_is_none_on_the_objective() -> None:
    shift = hodges_lehmann_shift([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], CONFIDENCE)
    assert samples_needed_for_shift(shift, shift.estimate) is None


# --------------------------------------------------------------------------- properties

values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
samples = st.lists(values, min_size=1, max_size=25)
whole = st.lists(st.integers(-50, 50).map(float), min_size=1, max_size=25)
confidences = st.floats(min_value=0.6, max_value=0.99)


@settings(deadline=None)
@given(samples, samples, confidences)
def test_the_estimate_lies_among_the_differences_and_the_bounds_are_ordered(
    baseline: list[float], phase: list[float], confidence: float
) -> None:
    shift = hodges_lehmann_shift(baseline, phase, confidence)
    differences = np.subtract.outer(np.asarray(phase), np.asarray(baseline))
    assert differences.min() <= shift.estimate <= differences.max()
    if shift.lower is not None and shift.upper is not None:
        assert differences.min() <= shift.lower <= shift.estimate <= shift.upper
        assert shift.upper <= differences.max()


@settings(deadline=None)
@given(samples, samples, values)
def test_adding_a_constant_to_both_samples_changes_nothing(
    baseline: list[float], phase: list[float], constant: float
) -> None:
    before = hodges_lehmann_shift(baseline, phase, CONFIDENCE)
    after = hodges_lehmann_shift(
        [v + constant for v in baseline], [v + constant for v in phase], CONFIDENCE
    )
    # Rounding of the sums only: a few ulps of the largest magnitude involved.
    tolerance = 1e-12 * (4e3 + abs(constant))
    assert after.estimate == pytest.approx(before.estimate, abs=tolerance)
    for one, other in ((before.lower, after.lower), (before.upper, after.upper)):
        assert (one is None) == (other is None)
        if one is not None and other is not None:
            assert other == pytest.approx(one, abs=tolerance)


@settings(deadline=None)
@given(whole, whole, st.integers(-20, 20).map(float))
def test_shifting_the_phase_shifts_the_estimate_and_bounds(
    baseline: list[float], phase: list[float], delta: float
) -> None:
    # Whole numbers: the arithmetic is exact, so equality is exact too.
    before = hodges_lehmann_shift(baseline, phase, CONFIDENCE)
    after = hodges_lehmann_shift(baseline, [v + delta for v in phase], CONFIDENCE)
    assert after.estimate == before.estimate + delta
    if before.lower is not None and before.upper is not None:
        assert (after.lower, after.upper) == (before.lower + delta, before.upper + delta)


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.one_of(values, st.integers(-3, 3).map(float)), min_size=1, max_size=40),
    st.lists(st.one_of(values, st.integers(-3, 3).map(float)), min_size=1, max_size=40),
    st.data(),
)
def test_counting_finds_the_same_order_statistics_as_sorting(
    baseline: list[float], phase: list[float], data: st.DataObject
) -> None:
    pairs = len(baseline) * len(phase)
    ranks = data.draw(st.lists(st.integers(1, pairs), min_size=1, max_size=5))
    expected = np.sort(np.subtract.outer(np.asarray(phase), np.asarray(baseline)).ravel())
    counted = difference_order_statistics(baseline, phase, ranks, materialize_max_pairs=0)
    assert counted == [float(expected[rank - 1]) for rank in ranks]


# --------------------------------------------------------------------------- journals

T0 = 1_700_000_000.0  # load_started_at; phases: baseline 0-10 s, fault 10-30 s, recovery 30-50 s


def make_journal(
    *,
    edges: list[EdgeStats] | None = None,
    faults: list[FaultEntry] | None = None,
    timeline: LoadTimeline | None = None,
    mesh: MeshTimeline | None = None,
) -> Journal:
    return new_journal(
        started_at=T0 - 5,
        load_started_at=T0,
        phases=phase_windows(T0, baseline=10, fault=20, recovery=20),
        edges=edges or [],
        faults=faults or [],
        timeline=timeline,
        mesh_timeline=mesh,
    )


def edge(fault: dict[str, int], caller: str = "frontend", callee: str = "catalog") -> EdgeStats:
    return EdgeStats(
        caller=caller,
        callee=callee,
        phases={"baseline": {"upstream_rq_total": 400}, "fault": fault},
        total={},
    )


def fault_entry(injected: float | None, reverted: float | None, phase: str = "fault") -> FaultEntry:
    return FaultEntry(
        name="catalog-abort",
        kind="http",
        phase=phase,
        targets=["catalog-0"],
        injected_at=None if injected is None else T0 + injected,
        reverted_at=None if reverted is None else T0 + reverted,
    )


# ------------------------------------------------------------------ retry amplification


@pytest.mark.parametrize(
    ("total", "retries", "verdict"),
    [(1200, 200, Verdict.PASS), (1500, 500, Verdict.PASS), (1600, 600, Verdict.FAIL)],
)
def test_retry_amplification_is_attempts_per_first_try(
    total: int, retries: int, verdict: Verdict
) -> None:
    journal = make_journal(edges=[edge({"upstream_rq_total": total, "upstream_rq_retry": retries})])
    result = evaluate_retry_amplification("amp", "fault", journal, "frontend", "catalog", 1.5)
    assert result.verdict is verdict
    assert result.measured == pytest.approx(total / (total - retries))
    assert result.lower == result.upper == result.measured
    assert (result.n, result.unit, result.kind) == (total - retries, "factor", "retryAmplification")
    assert f"{total} attempts for {total - retries} requests" in result.message


def test_retry_amplification_without_traffic_is_inconclusive() -> None:
    journal = make_journal(edges=[edge({"upstream_rq_total": 0, "upstream_rq_retry": 0})])
    result = evaluate_retry_amplification("amp", "fault", journal, "frontend", "catalog", 1.5)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no traffic on the edge frontend → catalog" in result.message


def test_retry_amplification_of_an_unknown_edge_names_the_known_ones() -> None:
    journal = make_journal(edges=[edge({"upstream_rq_total": 10})])
    result = evaluate_retry_amplification("amp", "fault", journal, "catalog", "inventory", 1.5)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "catalog → inventory" in result.message
    assert "edges with counters: frontend → catalog" in result.message


def test_retry_amplification_without_counters_for_the_phase_is_inconclusive() -> None:
    journal = make_journal(edges=[edge({"upstream_rq_total": 10})])
    result = evaluate_retry_amplification("amp", "recovery", journal, "frontend", "catalog", 1.5)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no counters" in result.message


def test_an_unknown_phase_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="phases: baseline, fault, recovery"):
        evaluate_sheds("sheds", "nope", make_journal(), "frontend", "catalog", 1)


# ------------------------------------------------------------------ sheds


@pytest.mark.parametrize(
    ("counters", "verdict", "sheds"),
    [
        ({"upstream_rq_total": 900, "upstream_rq_pending_overflow": 40}, Verdict.PASS, 40),
        ({"upstream_rq_total": 900, "upstream_rq_retry_overflow": 3,
          "upstream_rq_pending_overflow": 2}, Verdict.PASS, 5),
        ({"upstream_rq_total": 900, "upstream_rq_pending_overflow": 4}, Verdict.FAIL, 4),
        # 1327 connection overflows and not one rejection: queueing, not shedding (issue 8)
        ({"upstream_rq_total": 900, "upstream_cx_overflow": 1327}, Verdict.FAIL, 0),
        ({"upstream_rq_total": 0}, Verdict.INCONCLUSIVE, 0),
    ],
)  # fmt: skip
def test_sheds_count_only_rejections(
    counters: dict[str, int], verdict: Verdict, sheds: int
) -> None:
    journal = make_journal(edges=[edge(counters)])
    result = evaluate_sheds("sheds", "fault", journal, "frontend", "catalog", 5)
    assert result.verdict is verdict
    assert result.unit == "count" and result.objective == 5
    assert result.measured == sheds
    for stat in ("upstream_rq_pending_overflow", "upstream_rq_retry_overflow"):
        assert f"{counters.get(stat, 0)} {stat}" in result.message


def test_connection_overflows_are_reported_as_queueing() -> None:
    counters = {"upstream_rq_total": 900, "upstream_cx_overflow": 1327}
    result = evaluate_sheds("sheds", "fault", make_journal(edges=[edge(counters)]), "frontend",
                            "catalog", 1)  # fmt: skip
    assert result.verdict is Verdict.FAIL
    assert "1327 upstream_cx_overflow" in result.message
    assert "queueing, not shedding" in result.message


def test_sheds_on_an_edge_without_counters_are_inconclusive() -> None:
    result = evaluate_sheds("sheds", "fault", make_journal(), "frontend", "catalog", 1)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "edges with counters: none" in result.message


# ------------------------------------------------------------------ ejections


def mesh_with_ejections(
    at: dict[float, int], gaps: dict[str, list[float]] | None = None
) -> MeshTimeline:
    """A 1 Hz mesh timeline over 0-50 s with ejections on frontend → catalog at ``at``."""
    t = [float(s) for s in range(1, 51)]
    return MeshTimeline(
        t=t,
        edges=[
            EdgeSeries(
                caller="frontend",
                callee="catalog",
                counters={EJECTIONS: [at.get(s, 0) for s in t], "upstream_rq_total": [40] * 50},
            )
        ],
        gaps=gaps or {},
    )


def ejection_journal(
    phase_total: int, at: dict[float, int] | None, injected: float | None = 12.0
) -> Journal:
    return make_journal(
        edges=[edge({"upstream_rq_total": 800, EJECTIONS: phase_total})],
        faults=[] if injected is None else [fault_entry(injected, 30.0)],
        mesh=None if at is None else mesh_with_ejections(at),
    )


def test_ejections_without_a_deadline_use_the_phase_total() -> None:
    result = evaluate_ejections("ej", "fault", ejection_journal(2, None), "frontend", "catalog", 2)
    assert result.verdict is Verdict.PASS
    assert result.measured == 2
    assert "no per-second mesh timeline to time them" in result.message
    too_few = evaluate_ejections("ej", "fault", ejection_journal(1, None), "frontend", "catalog", 2)
    assert too_few.verdict is Verdict.FAIL


def test_the_first_ejection_is_timed_from_the_fault_injection() -> None:
    journal = ejection_journal(1, {15.0: 1})
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1, within_s=5.0)
    assert result.verdict is Verdict.PASS
    assert "first seen by +3.0s after the first fault injection" in result.message


def test_an_ejection_after_the_deadline_fails() -> None:
    journal = ejection_journal(1, {25.0: 1})
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1, within_s=5.0)
    assert result.verdict is Verdict.FAIL
    assert (result.lower, result.upper) == (0, 0)


def test_an_ejection_in_a_sample_straddling_the_deadline_is_inconclusive() -> None:
    # Injected at 12.0 s, deadline 17.5 s; the sample at 18 s covers (17, 18].
    journal = ejection_journal(1, {18.0: 1})
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1, within_s=5.5)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert (result.lower, result.upper) == (0, 1)
    assert "one-second resolution" in result.message


def test_without_a_fault_the_deadline_counts_from_the_phase_start() -> None:
    journal = ejection_journal(1, {13.0: 1}, injected=None)
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1, within_s=5.0)
    assert result.verdict is Verdict.PASS
    assert "within 5s of the phase start" in result.message


def test_a_silent_caller_proxy_widens_the_sample_interval() -> None:
    # frontend-0 did not answer at 16 s, so the ejection counted at 17 s may be from (15, 17].
    mesh = mesh_with_ejections({17.0: 1}, gaps={"frontend-0": [16.0]})
    journal = make_journal(
        edges=[edge({"upstream_rq_total": 800, EJECTIONS: 1})],
        faults=[fault_entry(15.5, 30.0)],
        mesh=mesh,
    )
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1, within_s=5.0)
    assert result.verdict is Verdict.INCONCLUSIVE
    # A gap of another service's proxy does not matter.
    other = journal.model_copy(update={"mesh_timeline": mesh_with_ejections(
        {17.0: 1}, gaps={"catalog-0": [16.0]})})  # fmt: skip
    result = evaluate_ejections("ej", "fault", other, "frontend", "catalog", 1, within_s=5.0)
    assert result.verdict is Verdict.PASS


def test_a_deadline_without_a_mesh_timeline_is_inconclusive_unless_too_few() -> None:
    enough = evaluate_ejections(
        "ej", "fault", ejection_journal(3, None), "frontend", "catalog", 1, within_s=5.0
    )
    assert enough.verdict is Verdict.INCONCLUSIVE
    assert "no per-second mesh timeline" in enough.message
    none = evaluate_ejections(
        "ej", "fault", ejection_journal(0, None), "frontend", "catalog", 1, within_s=5.0
    )
    assert none.verdict is Verdict.FAIL  # none in the whole phase: certainly none in time


def test_ejections_on_an_edge_without_traffic_are_inconclusive() -> None:
    journal = make_journal(edges=[edge({"upstream_rq_total": 0})])
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 1)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no traffic" in result.message


def test_ejections_from_the_timeline_alone() -> None:
    journal = make_journal(mesh=mesh_with_ejections({20.0: 2, 40.0: 5}))
    result = evaluate_ejections("ej", "fault", journal, "frontend", "catalog", 2)
    assert result.verdict is Verdict.PASS
    assert result.measured == 2  # the ejections at 40 s belong to the recovery phase


def test_ejections_blocked_by_max_ejection_percent_are_said_with_the_numbers() -> None:
    counters = {
        "upstream_rq_total": 900,
        EJECTIONS: 0,
        "outlier_detection.ejections_overflow": 12,
        "outlier_detection.ejections_detected_consecutive_5xx": 12,
    }
    journal = make_journal(edges=[edge(counters)])
    journal.scenario = {"mesh": {"destinations": {"catalog": {"outlierDetection": {}}}}}
    journal.mesh_timeline = MeshTimeline(
        t=[1.0],
        edges=[],
        endpoints={f"frontend-0→catalog-{i}": ["healthy"] for i in range(3)},
    )
    result = evaluate_ejections("ejected", "fault", journal, "frontend", "catalog", 1)
    assert result.verdict is Verdict.FAIL
    message = result.message
    assert "ejections were due but blocked" in message
    assert "refused 12 ejections (outlier_detection.ejections_overflow)" in message
    assert "12 for consecutive 5xx" in message
    assert "maxEjectionPercent 10% (unset: Envoy's and Istio's default)" in message
    assert "with 3 endpoints one ejection is 33% of the pool, already above the cap" in message


def test_ejections_without_overflow_say_nothing_about_the_cap() -> None:
    counters = {"upstream_rq_total": 900, EJECTIONS: 0}
    journal = make_journal(edges=[edge(counters)])
    journal.scenario = {
        "mesh": {"destinations": {"catalog": {"outlierDetection": {"maxEjectionPercent": 50}}}}
    }
    result = evaluate_ejections("ejected", "fault", journal, "frontend", "catalog", 1)
    assert result.verdict is Verdict.FAIL
    assert "blocked" not in result.message


# ------------------------------------------------------------------ recovery


def error_timeline(errors: dict[int, int], achieved: int = 40, seconds: int = 50) -> LoadTimeline:
    return LoadTimeline(
        t=[float(s) for s in range(seconds)],
        offered=[40.0] * seconds,
        achieved=[0 if errors.get(s) == -1 else achieved for s in range(seconds)],
        errors=[max(0, errors.get(s, 0)) for s in range(seconds)],
        p50_ms=[None] * seconds,
        p95_ms=[None] * seconds,
        p99_ms=[None] * seconds,
    )


def recovery_journal(
    errors: dict[int, int], reverted: float | None = 30.2, seconds: int = 50
) -> Journal:
    return make_journal(
        faults=[fault_entry(10.0, reverted)],
        timeline=error_timeline(errors, seconds=seconds),
    )


BAD_UNTIL_35 = {s: 20 for s in range(10, 35)}  # 50% errors, then none


@pytest.mark.parametrize(("max_s", "verdict"), [(10.0, Verdict.PASS), (3.0, Verdict.FAIL)])
def test_recovery_time_runs_from_the_revert_to_three_good_seconds(
    max_s: float, verdict: Verdict
) -> None:
    journal = recovery_journal(BAD_UNTIL_35)
    result = evaluate_recovery("rec", "recovery", journal, max_s, 0.01)
    assert result.verdict is verdict
    assert result.measured == pytest.approx(35.0 - 30.2)
    assert result.unit == "s"


def test_an_empty_second_breaks_the_streak() -> None:
    journal = recovery_journal({**BAD_UNTIL_35, 36: -1})  # no request started at 36 s
    result = evaluate_recovery("rec", "recovery", journal, 10.0, 0.01)
    assert result.measured == pytest.approx(37.0 - 30.2)


def test_an_error_rate_at_the_limit_counts_as_recovered() -> None:
    journal = recovery_journal({**BAD_UNTIL_35, 35: 1, 36: 1, 37: 1})  # 2.5% each
    assert evaluate_recovery("rec", "recovery", journal, 10.0, 0.025).measured == pytest.approx(
        35.0 - 30.2
    )
    assert evaluate_recovery("rec", "recovery", journal, 10.0, 0.02).measured == pytest.approx(
        38.0 - 30.2
    )


def test_never_recovering_within_max_fails_once_the_data_shows_it() -> None:
    journal = recovery_journal({s: 20 for s in range(10, 50)})
    result = evaluate_recovery("rec", "recovery", journal, 5.0, 0.01)
    assert result.verdict is Verdict.FAIL
    assert result.measured is None and result.lower == pytest.approx(50.0 - 30.2)
    assert "not recovered" in result.message


def test_a_run_that_ends_before_recovery_could_show_is_inconclusive() -> None:
    journal = recovery_journal({s: 20 for s in range(10, 50)})
    result = evaluate_recovery("rec", "recovery", journal, 30.0, 0.01)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "a phase of at least 33s after the fault would decide it" in result.message


def test_recovery_without_a_timeline_or_a_revert_is_inconclusive() -> None:
    no_timeline = make_journal(faults=[fault_entry(10.0, 30.2)])
    result = evaluate_recovery("rec", "recovery", no_timeline, 10.0, 0.01)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no per-second load timeline" in result.message
    never_reverted = recovery_journal(BAD_UNTIL_35, reverted=None)
    result = evaluate_recovery("rec", "recovery", never_reverted, 10.0, 0.01)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "no fault was reverted" in result.message
    reverted_late = recovery_journal(BAD_UNTIL_35, reverted=50.5)
    result = evaluate_recovery("rec", "recovery", reverted_late, 10.0, 0.01)
    assert "only after this phase ended" in result.message


@pytest.mark.parametrize(
    ("faults", "phases"),
    [
        ([fault_entry(10.0, 30.01)], ["recovery"]),  # reverted at the fault phase's end
        ([fault_entry(10.0, 20.0)], ["fault"]),  # reverted in the middle of its phase
        ([fault_entry(10.0, None)], ["recovery"]),  # no revert: the phase after the fault
        ([fault_entry(31.0, None, phase="recovery")], ["recovery"]),  # no phase after it
        ([], ["recovery"]),
    ],
)
def test_recovery_is_judged_where_the_faults_ended_by_default(
    faults: list[FaultEntry], phases: list[str]
) -> None:
    assert recovery_phases(make_journal(faults=faults)) == phases


# ------------------------------------------------------------------ the runner's dispatch

SCENARIO = """
apiVersion: harness/v1
metadata: {name: dispatch}
load: {rate: 40}
phases:
  - {name: baseline, duration: 10s}
  - {name: fault, duration: 20s}
  - {name: recovery, duration: 20s}
faults:
  - {kind: http, phase: fault, target: {service: catalog}, abort: {httpStatus: 503}}
slos:
  - {name: errors, kind: errorRate, max: 60%}
  - {name: slower, kind: latencyShift, baseline: baseline, max: 20ms}
  - name: amp
    kind: retryAmplification
    edge: {from: frontend, to: catalog}
    max: 1.5
    phases: [fault]
  - name: ejected
    kind: ejections
    edge: {from: frontend, to: catalog}
    within: 5s
    phases: [fault]
  - {name: shed, kind: sheds, edge: {from: frontend, to: catalog}, phases: [fault]}
  - {name: back, kind: recoveryTime, max: 10s}
"""


def test_the_judge_judges_every_slo_kind_in_its_phases(tmp_path: Path) -> None:
    scenario = load_scenario_text(SCENARIO)
    journal = make_journal(
        edges=[
            edge(
                {
                    "upstream_rq_total": 1200,
                    "upstream_rq_retry": 200,
                    "upstream_rq_pending_overflow": 7,
                    EJECTIONS: 1,
                }
            )
        ],
        faults=[fault_entry(10.0, 30.01)],
        timeline=error_timeline(BAD_UNTIL_35),
        mesh=mesh_with_ejections({13.0: 1}),
    )
    samples = [
        Sample(t=T0 + i / 40, ms=20.0 + (30.0 if 10 <= i / 40 < 30 else 0.0), status=200,
               ok=True, err=None, rid=str(i))
        for i in range(2000)
    ]  # fmt: skip
    journal.slos.extend(judge_slos(scenario.slos, journal, samples))
    judged = {(r.slo, r.phase): r.verdict for r in journal.slos}
    assert judged == {
        ("errors", "baseline"): Verdict.PASS,
        ("errors", "fault"): Verdict.PASS,
        ("errors", "recovery"): Verdict.PASS,
        ("slower", "fault"): Verdict.FAIL,  # every request exactly 30 ms slower
        ("slower", "recovery"): Verdict.PASS,
        ("amp", "fault"): Verdict.PASS,
        ("ejected", "fault"): Verdict.PASS,
        ("shed", "fault"): Verdict.PASS,
        ("back", "recovery"): Verdict.PASS,
    }
