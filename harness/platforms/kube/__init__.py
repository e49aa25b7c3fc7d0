"""The Kubernetes platform's client side: which cluster a run may touch
(:mod:`~harness.platforms.kube.context`) and how the harness writes to it
(:mod:`~harness.platforms.kube.client`)."""
