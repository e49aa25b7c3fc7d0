"""Envoy's ``%RESPONSE_FLAGS%``: what each short code in an access-log line means.

The report explains every flag it shows with this table; codes Envoy adds later are shown
as they are, marked unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESPONSE_FLAGS", "FlagInfo", "split_flags"]


@dataclass(frozen=True)
class FlagInfo:
    """One response flag: its code, Envoy's long name and what it means for a request."""

    code: str
    name: str
    meaning: str


_TABLE = (
    ("UH", "NoHealthyUpstream", "no healthy host in the upstream cluster (503)"),
    ("UF", "UpstreamConnectionFailure", "connecting to the upstream failed (503)"),
    ("UO", "UpstreamOverflow", "circuit breaker open: pending or connection overflow (503)"),
    ("NR", "NoRouteFound", "no route matched the request (404)"),
    ("URX", "UpstreamRetryLimitExceeded", "retries exhausted: the last attempt failed"),
    ("NC", "NoClusterFound", "the route's upstream cluster does not exist"),
    ("DT", "DurationTimeout", "max connection or stream duration reached"),
    ("DC", "DownstreamConnectionTermination", "the client closed the connection first"),
    ("LH", "FailedLocalHealthCheck", "the local service failed its health check (503)"),
    ("UT", "UpstreamRequestTimeout", "route timeout or per-try timeout expired (504)"),
    ("LR", "LocalReset", "Envoy reset the stream itself"),
    ("UR", "UpstreamRemoteReset", "the upstream reset the stream"),
    ("UC", "UpstreamConnectionTermination", "the upstream connection closed mid-request"),
    ("DI", "DelayInjected", "the fault filter delayed the request"),
    ("FI", "FaultInjected", "the fault filter aborted the request with its status"),
    ("RL", "RateLimited", "rate limited locally (429)"),
    ("UAEX", "UnauthorizedExternalService", "denied by the external authorization service"),
    ("RLSE", "RateLimitServiceError", "the rate limit service failed"),
    ("IH", "InvalidEnvoyRequestHeaders", "strict header validation refused a header"),
    ("SI", "StreamIdleTimeout", "the stream idle timeout expired"),
    ("DPE", "DownstreamProtocolError", "the client broke the HTTP protocol"),
    ("UPE", "UpstreamProtocolError", "the upstream broke the HTTP protocol"),
    ("UMSDR", "UpstreamMaxStreamDurationReached", "the upstream max stream duration expired"),
    ("OM", "OverloadManager", "Envoy's overload manager shed the request"),
    ("DF", "DnsResolutionFailed", "DNS resolution of the upstream failed"),
    ("DO", "DropOverload", "dropped by the cluster's drop-overload policy"),
)

RESPONSE_FLAGS: dict[str, FlagInfo] = {code: FlagInfo(code, n, m) for code, n, m in _TABLE}


def split_flags(value: str) -> list[str]:
    """The single codes of an access-log value: ``"UF,URX"`` → ``["UF", "URX"]``, ``"-"`` → ``[]``.

    >>> split_flags("UF,URX")
    ['UF', 'URX']
    """
    return [part.strip() for part in value.split(",") if part.strip() not in ("", "-")]
