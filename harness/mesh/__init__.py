"""The mesh policy, translated for each platform (``envoy`` for local, ``istio`` for kind)."""
