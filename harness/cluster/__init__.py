"""Cluster lifecycle for ``--platform kube``: the local single-node cluster, kind, and the
container images the harness builds from host files (``harness.cluster.images``).

Importing the package imports nothing: each module is imported where it is used.
"""
