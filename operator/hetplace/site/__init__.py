"""The site side (docs/routes.md): the routes document, the routing core shared by `hetplace gateway`
and `hetplace.client`, and the telemetry a site produces for the operator."""
