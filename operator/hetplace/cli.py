"""The `hetplace` command line: explain, simulate, render, crds (and later run)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable

import click
import yaml
from rich.console import Console
from rich.text import Text

from hetplace.api.errors import InvalidObject
from hetplace.sim import POLICIES

EXIT_INFEASIBLE = 3
EXIT_INVALID = 2
LONG_RUN_STEPS = 2000      # steps x policies from which a progress bar is shown even when stderr is no terminal


def user_errors(command: Callable) -> Callable:
    """Turn refused input into exit 2 with the message, and never show a traceback by default."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InvalidObject as refused:
            click.echo(f"error: {refused}", err=True)
            sys.exit(EXIT_INVALID)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as bug:  # a bug, not the user's fault: say so briefly
            if os.environ.get("HETPLACE_DEBUG"):
                raise
            click.echo(f"internal error: {type(bug).__name__}: {bug} (set HETPLACE_DEBUG=1 for the traceback)",
                       err=True)
            sys.exit(1)

    return run


def decision_inputs(command: Callable) -> Callable:
    """The options of the commands that decide workloads from files: -f, --pools, --telemetry."""
    for option in reversed([
        click.option("-f", "--filename", "workload_file", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="InferenceWorkload manifest(s); pools in it are used when --pools is not given."),
        click.option("--pools", "pools_path", type=click.Path(exists=True, path_type=Path),
                     help="ComputePool manifests: a file or a directory of *.yaml."),
        click.option("--telemetry", "telemetry_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Observed links and traffic that override the declared ones."),
    ]):
        command = option(command)
    return command


@click.group()
@click.version_option(package_name="hetplace")
def main() -> None:
    """hetplace places Triton-served models on GPU, CPU and Arm pools by SLO, bandwidth and cost."""


@main.command()
@decision_inputs
@click.option("--compare", is_flag=True,
              help="With --telemetry: also decide on the declared values and say what moved and why "
                   "(json/yaml: {declared, observed, moves}).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@user_errors
def explain(workload_file: Path, pools_path: Path | None, telemetry_path: Path | None, compare: bool,
            output: str) -> None:
    """Decide where a workload runs, without a cluster, and say why.

    Exit status: 0 placed, 3 infeasible (the closest option is named), 2 invalid input.
    """
    from hetplace import explain as ex

    if compare and telemetry_path is None:
        raise click.UsageError("--compare needs --telemetry (the conditions to compare with)")
    read = ex.inputs(workload_file, pools_path, telemetry_path)
    pools = read.pools
    cases = ex.decide(read.workloads, pools)
    before = ex.decide(read.declared, read.declared_pools) if compare else None

    if output == "table":
        console = Console(width=None if sys.stdout.isatty() else 160)
        if before is not None:
            ex.print_cases(console, before, title="declared links and traffic")
            ex.print_cases(console, cases, title=f"observed ({telemetry_path})")
            for old, new in zip(before, cases):
                console.print(ex.comparison_table(old, new, "declared", f"observed ({telemetry_path.name})"))
                for line in ex.what_moved(old, new, pools):
                    console.print(Text.assemble((new.decision.workload, "bold"), ": ", line))
        else:
            ex.print_cases(console, cases)
    else:
        docs = [ex.decision_json(c.decision) for c in cases]
        if before is not None:   # the decision on declared values, on observed ones, and what moved
            docs = [{"declared": ex.decision_json(old.decision), "observed": doc,
                     "moves": ex.what_moved(old, new, pools)} for old, new, doc in zip(before, cases, docs)]
        payload = docs[0] if len(docs) == 1 else docs
        if output == "json":
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(yaml.safe_dump(payload, sort_keys=False), nl=False)
    infeasible = [c.decision for c in cases if not c.decision.feasible]
    for d in infeasible:
        click.echo(f"infeasible: {d.workload}: {d.reason}", err=True)
    if infeasible:
        sys.exit(EXIT_INFEASIBLE)


@main.command()
@click.argument("scenario_paths", metavar="SCENARIO...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--policy", "policies", multiple=True, type=click.Choice([*POLICIES, "all"]),
              help="A policy to run; repeat for several, or `all` for every one (default: hetplace).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG: each route's latency against its SLO over time per policy, and cost.")
@click.option("--progress/--no-progress", default=None,
              help=f"A progress bar on stderr (default: when stderr is a terminal or the run has at least "
                   f"{LONG_RUN_STEPS} steps x policies).")
@click.option("--gateway/--no-gateway", default=True, show_default=True,
              help="Sites run `hetplace gateway`: a route whose pool is down or whose link is saturated is served "
                   "in the same step by the first live fallback of the site's routes. --no-gateway: it stays "
                   "unserved until a decision moves it (to compare).")
@user_errors
def simulate(scenario_paths: tuple[Path, ...], policies: tuple[str, ...], output: str, plot_path: Path | None,
             progress: bool | None, gateway: bool) -> None:
    """Run a scenario through the control loop and compare policies, without a cluster.

    SCENARIO is one or more files or directories of YAML holding the ComputePool and
    InferenceWorkload manifests and exactly one `kind: Scenario` document
    {durationSeconds, stepSeconds, events: [{at, links, traffic, poolDown, poolUp}]}.
    Decisions take effect one step after the state they saw; the first placement is deployed
    before traffic starts and serves from t = 0. `oracle` is the optimum of each step, at that step.
    Every policy runs with the site side installed: each site's gateway holds the routes written when
    the placement in force was decided and, when a route's pool is down or its link saturated, sends
    its requests to the first fallback with room, in the same step (--no-gateway turns this off).

    Exit status: 0 ran (whatever the attainment), 2 invalid input.
    """
    from hetplace.api.load import load_manifests
    from hetplace.sim import report
    from hetplace.sim.runner import simulate as run_scenario
    from hetplace.sim.trace import trace_from_manifests

    names = POLICIES if "all" in policies else tuple(dict.fromkeys(policies or ("hetplace",)))
    trace = trace_from_manifests(load_manifests(list(scenario_paths)), ", ".join(map(str, scenario_paths)))
    steps = len(trace.step_times) * len(names)
    with solver_output_to_stderr():
        if progress if progress is not None else (sys.stderr.isatty() or steps >= LONG_RUN_STEPS):
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=sys.stderr.isatty()) as bar:
                task = bar.add_task(f"simulating {trace.name}", total=steps)
                sim = run_scenario(trace, names, gateway=gateway, on_step=lambda policy: bar.update(
                    task, advance=1, description=f"simulating {trace.name}: {policy}"))
        else:
            sim = run_scenario(trace, names, gateway=gateway)

    if output == "json":
        click.echo(json.dumps(report.simulation_json(sim), indent=2))
    else:
        report.print_simulation(Console(width=None if sys.stdout.isatty() else 160), sim)
    if plot_path is not None:
        from hetplace.sim.plot import plot_simulation

        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot_simulation(sim, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)


@main.command()
@decision_inputs
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@user_errors
def render(workload_file: Path, pools_path: Path | None, telemetry_path: Path | None, output: str) -> None:
    """Print the Kubernetes objects a decision produces (Deployments, Services, the routes ConfigMap),
    for teams that review rendered output in Git. No owner references: there is no live object.

    Exit status: 0 rendered, 3 a workload is infeasible (nothing rendered for it), 2 invalid input.
    """
    from hetplace import explain as ex
    from hetplace.engine.fallbacks import route_options
    from hetplace.render import render_decision

    read = ex.inputs(workload_file, pools_path, telemetry_path)
    pool_objects = {p.metadata.name: p for p in read.pool_objects}
    rendered, infeasible = [], []
    for obj, w, case in zip(read.workload_objects, read.workloads, ex.decide(read.workloads, read.pools)):
        if not case.decision.feasible:
            infeasible.append(case.decision)
            continue
        if obj.metadata.namespace is None:
            obj = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"namespace": "default"})})
        rendered += render_decision(obj, pool_objects, case.decision,
                                    routes=route_options(w, read.pools, case.decision)).objects
    if output == "json":
        click.echo(json.dumps(rendered, indent=2))
    else:
        click.echo(yaml.safe_dump_all(rendered, sort_keys=False), nl=False)
    for d in infeasible:
        click.echo(f"infeasible: {d.workload}: {d.reason}", err=True)
    if infeasible:
        sys.exit(EXIT_INFEASIBLE)


@contextlib.contextmanager
def solver_output_to_stderr():
    """HiGHS (inside scipy) can print diagnostics straight to file descriptor 1; while the
    solver runs, that descriptor points at stderr so `-o json` on stdout stays parseable."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@main.command("run")
@click.option("--priority", type=int, default=None,
              help="kopf peering priority; the highest live instance works, the others wait (default: random).")
@click.option("--standalone", is_flag=True, help="No peering: this instance works alone.")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="Watch only these namespaces (overrides HETPLACE_WATCH_NAMESPACES).")
@click.option("--liveness", "liveness_endpoint", default=None,
              help="kopf's health endpoint, e.g. http://0.0.0.0:8081/healthz.")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@user_errors
def run_operator(priority: int | None, standalone: bool, namespaces: tuple[str, ...], liveness_endpoint: str | None,
                 verbose: bool) -> None:
    """The operator: watch ComputePools and InferenceWorkloads, place, deploy Triton, move (docs/design.md §4).

    Settings come from HETPLACE_* variables (see config.py and the chart's values); the cluster from
    the pod's service account, or KUBECONFIG."""
    import logging

    import os
    import re

    import pydantic
    from pydantic_settings import SettingsError

    from hetplace.config import Settings
    from hetplace.controller import main as operator_main

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:     # kopf says so for every handler on every event: thousands of lines a minute
        logging.getLogger("kopf.objects").addFilter(
            lambda record: not (record.levelno == logging.INFO and str(record.msg).startswith("Handler ")
                                and str(record.msg).endswith(" succeeded.")))
    try:
        settings = Settings(**({"watch_namespaces": list(namespaces)} if namespaces else {}))
    except pydantic.ValidationError as refused:
        raise click.ClickException("; ".join(
            f"HETPLACE_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}" for e in refused.errors())) from None
    except SettingsError as unreadable:        # a list or map setting that is not JSON
        field = re.search(r'field "(\w+)"', str(unreadable))
        name = f"HETPLACE_{field.group(1).upper()}" if field else "a HETPLACE_ variable"
        raise click.ClickException(f"{name}={os.environ.get(name, '')!r}: not valid JSON "
                                   f"({unreadable.__cause__ or unreadable})") from None
    operator_main.run(settings, priority=priority, standalone=standalone, liveness_endpoint=liveness_endpoint)


@main.command("crds")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per CRD into DIR instead of printing them all.")
def crds(out_dir: Path | None) -> None:
    """Print (or write) the CustomResourceDefinitions generated from the API models."""
    from hetplace.api.crdgen import render_crds

    rendered = render_crds()
    if out_dir is None:
        click.echo("---\n".join(rendered.values()), nl=False)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename, text in rendered.items():
        (out_dir / filename).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out_dir / filename}")


@main.command("gateway")
@click.option("--site", required=True, help="The site this gateway serves: routes of other sites are ignored.")
@click.option("--routes", "routes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Routes ConfigMaps as `kubectl get -o yaml` prints them (one, a List, or several); "
                   "read again when it changes.")
@click.option("--workload", "workloads", multiple=True, metavar="NAMESPACE/NAME",
              help="Watch this workload's routes ConfigMap in the API (repeatable).")
@click.option("--namespace", "namespaces", multiple=True,
              help="Watch every hetplace routes ConfigMap in this namespace (repeatable; with neither this "
                   "nor --workload nor --routes: all namespaces).")
@click.option("--listen", default="0.0.0.0", show_default=True, help="Address the listeners bind.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=8001, show_default=True, help="0: no gRPC.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=9090, show_default=True,
              help="Prometheus metrics at /metrics.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS and gRPC over TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="The key of --tls-cert.")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False),
              help="CA bundle for upstreams at https:// and grpcs:// endpoints (default: the system's).")
@click.option("--deadline-seconds", type=float, default=10.0, show_default=True,
              help="A request's whole time upstream, every route tried included.")
@click.option("--max-request-bytes", type=int, default=16 * 1024 * 1024, show_default=True,
              help="Larger request bodies are refused with 413.")
@click.option("--probe-interval-seconds", type=float, default=10.0, show_default=True,
              help="How often idle links are probed and link figures published.")
@click.option("--link-idle-seconds", type=float, default=30.0, show_default=True,
              help="A link that carried no request for this long, or only requests of one size, is measured "
                   "with light probes (at most 5% of its bandwidth) instead of from its requests.")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@user_errors
def gateway(site: str, routes_file: Path | None, workloads: tuple[str, ...], namespaces: tuple[str, ...],
            listen: str, http_port: int, grpc_port: int, metrics_port: int, tls_cert: str | None,
            tls_key: str | None, upstream_ca: str | None, deadline_seconds: float, max_request_bytes: int,
            probe_interval_seconds: float, link_idle_seconds: float, verbose: bool) -> None:
    """Serve KServe-V2 (HTTP and gRPC) at a site and forward each request along its model's routes,
    failing over to the next route when one cannot serve (docs/routes.md); export site traffic,
    latency and link figures (docs/telemetry.md)."""
    import asyncio
    import logging

    from hetplace.site.gateway import GatewaySettings, serve
    from hetplace.site.sources import FileRoutes, KubeRoutes, Workload, connect_core_v1, deliver_to_loop

    if routes_file is not None and (workloads or namespaces):
        raise click.BadParameter("--routes reads a file; it cannot be combined with --workload or --namespace",
                                 param_hint="'--routes'")
    if routes_file is not None and not routes_file.is_file():
        raise click.BadParameter(f"{str(routes_file)!r}: no such file", param_hint="'--routes'")
    parsed: list[Workload] = []
    for text in workloads:
        try:
            parsed.append(Workload.parse(text))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--workload'") from None
    if bool(tls_cert) != bool(tls_key):
        raise click.BadParameter("--tls-cert and --tls-key go together",
                                 param_hint="'--tls-cert'" if tls_key else "'--tls-key'")
    for flag, value in (("--deadline-seconds", deadline_seconds), ("--probe-interval-seconds", probe_interval_seconds),
                        ("--link-idle-seconds", link_idle_seconds)):
        if not value > 0:
            raise click.BadParameter(f"{value!r}: must be > 0", param_hint=f"'{flag}'")
    if max_request_bytes < 1024:
        raise click.BadParameter(f"{max_request_bytes}: must be at least 1024", param_hint="'--max-request-bytes'")
    ports = [p for p in (http_port, grpc_port, metrics_port) if p]
    if len(set(ports)) != len(ports):
        raise click.BadParameter(f"the HTTP, gRPC and metrics ports must differ ({http_port}, {grpc_port}, "
                                 f"{metrics_port})", param_hint="'--http-port'")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = GatewaySettings(site=site, listen=listen, http_port=http_port, grpc_port=grpc_port,
                               metrics_port=metrics_port, tls_cert=tls_cert, tls_key=tls_key, upstream_ca=upstream_ca,
                               deadline_s=deadline_seconds, max_request_bytes=max_request_bytes,
                               probe_interval_s=probe_interval_seconds, link_idle_s=link_idle_seconds)

    async def start_source(router, metrics):
        if routes_file is not None:
            source = FileRoutes(str(routes_file), router.replace, metrics)
            source.poll()
            task = asyncio.create_task(source.run())
            return task.cancel
        source = KubeRoutes(connect_core_v1(), deliver_to_loop(asyncio.get_running_loop(), router.replace),
                            namespaces=namespaces, workloads=parsed, metrics=metrics)
        source.start()
        return source.stop

    asyncio.run(serve(settings, start_source))
