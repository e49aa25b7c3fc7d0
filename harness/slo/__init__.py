"""SLO verdicts: PASS, FAIL or INCONCLUSIVE per SLO and phase, with confidence bounds.

``verdict`` judges one SLO in one phase; ``stats`` holds the confidence bounds behind it
(Wilson and Clopper-Pearson for rates, order statistics for latency quantiles).

>>> from harness.slo import Verdict, evaluate_error_rate
>>> evaluate_error_rate("errors", "baseline", 0, 400, 0.01, 0.95).verdict is Verdict.PASS
True
"""

from harness.slo.stats import (
    empirical_quantile,
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
    "SloResult",
    "Verdict",
    "empirical_quantile",
    "evaluate_error_rate",
    "evaluate_latency",
    "quantile_interval",
    "quantile_lower_bound",
    "quantile_upper_bound",
    "rate_lower_bound",
    "rate_upper_bound",
    "samples_needed_for_quantile",
    "samples_needed_for_rate",
    "wilson_interval",
]
