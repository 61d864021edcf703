"""The `hetplace` command line: explain, crds (and later run, simulate, render)."""

import click


@click.group()
@click.version_option(package_name="hetplace")
def main() -> None:
    """hetplace places Triton-served models on GPU, CPU and Arm pools by SLO, bandwidth and cost."""
