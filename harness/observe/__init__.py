"""Watching the mesh: Envoy admin API, stats, access logs."""
