"""`hetplace.client`: the site's routing, failover, encoding choice and metrics in-process, for Python
applications on tritonclient (docs/routes.md, "In your application: hetplace.client")."""

from hetplace.client.site import NextRoute, SiteClient
from hetplace.client.transport import Protocol
from hetplace.site.core import NoRouteServed, Served, Tried, UnknownModel

__all__ = ["NextRoute", "NoRouteServed", "Protocol", "Served", "SiteClient", "Tried", "UnknownModel"]
