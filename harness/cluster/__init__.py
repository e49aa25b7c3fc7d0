"""Kubernetes clusters the harness brings up for ``--platform kube``.

:mod:`harness.cluster.local`: a real single-node cluster on this machine, from the pinned
toolchain and Debian's containerd, inside network and mount namespaces the harness makes
(``harness cluster up --local``).
"""
