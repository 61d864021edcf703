"""The only network reads besides the Kubernetes API: Prometheus (and, later, tritonclient) -> observations."""
