"""`hetplace simulate`: a scenario trace run through the control loop and the baseline policies, on
the same engine that places workloads in a cluster. Pure: loaded objects in (`trace`), results out
(`runner`), shown by `report` and `plot`.

This module stays light (the CLI reads POLICIES when it starts); import the submodules for the rest.
"""

POLICIES = ("hetplace", "static", "gpu-only", "edge-only", "oracle")
"""Every policy, in the order reports list them; `hetplace` is the default."""
