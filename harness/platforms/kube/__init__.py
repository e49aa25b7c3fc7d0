"""``--platform kube``: the scenario's app and mesh in a Kubernetes cluster with Istio (kind,
or the single-node cluster ``harness cluster up --local`` brings up here).

Modules: :mod:`.options` (what the command line says; light), :mod:`.context` (which cluster
a run may touch: the guard, the pinned kubeconfig), :mod:`.client` (how the harness writes
to it), :mod:`.objects` (the run's objects, pure), :mod:`.admin` (Envoy admin through the
API server's pod proxy), :mod:`.deployment` (the
:class:`~harness.platforms.base.Deployment`), :mod:`.platform` (pins the context and deploys).
"""
