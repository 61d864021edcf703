"""The only network reads besides the Kubernetes API: Prometheus and Triton (tritonclient) -> observations and verdicts."""
