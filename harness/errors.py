"""The harness's exception tree and exit codes.

::

    HarnessError                  every error the harness raises on purpose (exit 2)
    ├── ScenarioError             a scenario file is malformed or inconsistent
    ├── PlatformError             the platform could not deploy, probe or tear down
    │   ├── ToolMissingError      a required binary (envoy, locust, nft, go, ...) is missing
    │   ├── ControlPlaneError     etcd / kube-apiserver / istiod did not start or refused
    │   └── ContextRefused        a kube context the guard refuses (not kind, not the harness's)
    ├── ToolchainError            building the control-plane toolchain failed
    ├── FaultError                a fault could not be injected or reverted
    ├── LoadError                 the load generator failed
    ├── Interrupted               a signal stopped the run (faults reverted first)
    │   └── Halted                an operator halted a game day (faults reverted first)
    └── OutputError               a file could not be written safely (link, directory, input)

Exit codes of ``harness run`` (also in the README):

====  ================================================================================
0     every SLO passed and every fault took effect
1     an SLO failed, or a fault showed no effect
2     bad input (scenario, journal, arguments) or a harness error, in one line
3     inconclusive: no SLO failed, but at least one could not be decided
130   interrupted (SIGINT / SIGTERM / SIGHUP) or halted by a game day's operator; faults
      were reverted
====  ================================================================================
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``harness`` command line."""

    PASSED = 0
    FAILED = 1
    ERROR = 2
    INCONCLUSIVE = 3
    INTERRUPTED = 130


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class ScenarioError(HarnessError):
    """A scenario file is malformed or inconsistent.

    ``problems`` holds one line per problem, each starting with ``file:line:col``.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: {count} {noun}\n" + "\n".join(self.problems))


class PlatformError(HarnessError):
    """The platform could not deploy, probe or tear down the app."""


class ToolMissingError(PlatformError):
    """A binary the harness needs is not installed; the message says how to install it."""


class ControlPlaneError(PlatformError):
    """etcd, kube-apiserver or istiod did not start, did not become ready, or refused an
    object; the message names the process or object and quotes its reason."""


class ContextRefused(PlatformError):
    """The kube context guard refused a context before any API call: it is neither a kind
    cluster on loopback nor a cluster the harness brought up, and it is not allow-listed.
    The message names the context, why, and how to allow it."""


class ClusterError(PlatformError):
    """The local Kubernetes cluster (``harness cluster up --local``) could not be brought up,
    inspected or taken down; the message names the component and quotes its log."""


class ToolchainError(HarnessError):
    """``harness toolchain install`` could not build or fetch a pinned artifact."""


class FaultError(HarnessError):
    """A fault could not be injected or reverted."""


class LoadError(HarnessError):
    """The load generator failed to start or to produce samples."""


class OutputError(HarnessError):
    """A file could not be written safely: the target is a directory, the input itself, a
    planted link, or its directory is not writable."""


class Interrupted(HarnessError):
    """The run received SIGINT, SIGTERM or SIGHUP; faults were reverted."""

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"interrupted by {signal_name}")


class Halted(Interrupted):
    """An operator halted a game day (``harness gameday``); faults were reverted first.

    A halt ends the run like a signal does (status ``interrupted``, exit 130)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        HarnessError.__init__(self, f"halted: {reason}")
        self.signal_name = "halt"
