"""Pure: a decision -> the Kubernetes objects it needs (Deployments, Services, routes ConfigMap)."""

from hetplace.render.triton import Rendered, render_decision

__all__ = ["Rendered", "render_decision"]
