"""Cluster lifecycle for ``--platform kube``: a kind cluster (:mod:`~harness.cluster.kind`),
the local single-node cluster, the container images the harness builds from host files
(:mod:`~harness.cluster.images`), and Istio from its Helm charts
(:mod:`~harness.cluster.istio_install`).

Importing the package imports nothing: each module is imported where it is used.
"""
