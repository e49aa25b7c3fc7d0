"""Cluster lifecycle: a kind cluster (:mod:`~harness.cluster.kind`), the local single-node
cluster, images built without Docker, and Istio from its Helm charts
(:mod:`~harness.cluster.istio_install`)."""
