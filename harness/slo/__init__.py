"""SLO verdicts: PASS, FAIL or INCONCLUSIVE per SLO and phase, with confidence bounds.

``verdict`` judges error rates and latency quantiles, ``shift`` the latency shift of a
phase over its baseline, ``mesh`` what the mesh did (retry amplification, ejections,
sheds, recovery time); ``stats`` holds the confidence bounds behind them (Wilson and
Clopper-Pearson for rates, order statistics for quantiles, Hodges-Lehmann with
Mann-Whitney bounds for shifts).

>>> from harness.slo import Verdict, evaluate_error_rate
>>> evaluate_error_rate("errors", "baseline", 0, 400, 0.01, 0.95).verdict is Verdict.PASS
True
"""

from harness.slo.mesh import (
    evaluate_ejections,
    evaluate_recovery,
    evaluate_retry_amplification,
    evaluate_sheds,
    recovery_phases,
)
from harness.slo.shift import evaluate_latency_shift
from harness.slo.stats import (
    ShiftInterval,
    empirical_quantile,
    hodges_lehmann_shift,
    quantile_interval,
    quantile_lower_bound,
    quantile_upper_bound,
    rate_lower_bound,
    rate_upper_bound,
    samples_needed_for_quantile,
    samples_needed_for_rate,
    wilson_interval,
)
from harness.slo.verdict import SloResult, Verdict, evaluate_error_rate, evaluate_latency

__all__ = [
    "ShiftInterval",
    "SloResult",
    "Verdict",
    "empirical_quantile",
    "evaluate_ejections",
    "evaluate_error_rate",
    "evaluate_latency",
    "evaluate_latency_shift",
    "evaluate_recovery",
    "evaluate_retry_amplification",
    "evaluate_sheds",
    "hodges_lehmann_shift",
    "quantile_interval",
    "quantile_lower_bound",
    "quantile_upper_bound",
    "rate_lower_bound",
    "rate_upper_bound",
    "recovery_phases",
    "samples_needed_for_quantile",
    "samples_needed_for_rate",
    "wilson_interval",
]
