"""SLO verdicts: PASS, FAIL or INCONCLUSIVE per SLO and phase, with confidence bounds.

``verdict`` judges error rates and latency quantiles, ``shift`` the latency shift of a
phase over its baseline, ``mesh`` what the mesh did (retry amplification, ejections,
sheds, recovery time); ``stats`` holds the confidence bounds behind them (Wilson and
Clopper-Pearson for rates, order statistics for quantiles, Hodges-Lehmann with
Mann-Whitney bounds for shifts, widened by their design effect when failures or slow
requests come in bursts); ``family`` applies Holm's family-wise FAIL control across a
scenario's SLO × phase pairs.

>>> from harness.slo import Verdict, evaluate_error_rate
>>> evaluate_error_rate("errors", "baseline", 0, 400, 0.01, 0.95).verdict is Verdict.PASS
True
"""

from harness.slo.family import adjust_family, holm_adjusted
from harness.slo.mesh import (
    evaluate_ejections,
    evaluate_recovery,
    evaluate_retry_amplification,
    evaluate_sheds,
    recovery_phases,
)
from harness.slo.shift import evaluate_latency_shift
from harness.slo.stats import (
    Dispersion,
    ShiftInterval,
    empirical_quantile,
    hodges_lehmann_shift,
    quantile_interval,
    quantile_lower_bound,
    quantile_upper_bound,
    rate_dispersion,
    rate_lower_bound,
    rate_upper_bound,
    samples_needed_for_quantile,
    samples_needed_for_rate,
    wilson_interval,
)
from harness.slo.verdict import (
    SloResult,
    Verdict,
    evaluate_error_rate,
    evaluate_latency,
    per_second_counts,
)

__all__ = [
    "Dispersion",
    "ShiftInterval",
    "SloResult",
    "Verdict",
    "adjust_family",
    "empirical_quantile",
    "evaluate_ejections",
    "evaluate_error_rate",
    "evaluate_latency",
    "evaluate_latency_shift",
    "evaluate_recovery",
    "evaluate_retry_amplification",
    "evaluate_sheds",
    "hodges_lehmann_shift",
    "holm_adjusted",
    "per_second_counts",
    "quantile_interval",
    "quantile_lower_bound",
    "quantile_upper_bound",
    "rate_dispersion",
    "rate_lower_bound",
    "rate_upper_bound",
    "recovery_phases",
    "samples_needed_for_quantile",
    "samples_needed_for_rate",
    "wilson_interval",
]
