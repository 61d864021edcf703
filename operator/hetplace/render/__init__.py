"""Pure: a decision -> the Kubernetes objects it needs (Deployments, Services, routes ConfigMap). Next milestone."""
