"""Operator settings from HETPLACE_* variables: defaults, overrides, and clear refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from hetplace.config import DEFAULT_QUERIES, Settings


def test_defaults_decide_on_declared_values_and_use_the_triton_queries(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("HETPLACE_"):
            monkeypatch.delenv(key)
    settings = Settings()
    assert settings.prometheus_url is None and settings.dry_run is False
    assert settings.queries == DEFAULT_QUERIES
    assert "nv_inference_request_duration_us" in settings.queries["request_duration_us"]


def test_environment_overrides_and_a_custom_query_keeps_the_others(monkeypatch):
    monkeypatch.setenv("HETPLACE_PROMETHEUS_URL", "http://prometheus.monitoring:9090")
    monkeypatch.setenv("HETPLACE_DRY_RUN", "true")
    monkeypatch.setenv("HETPLACE_WATCH_NAMESPACES", '["factory", "vision"]')
    monkeypatch.setenv("HETPLACE_QUERIES", '{"link_bandwidth_bytes": "avg(my_bw{{site=\\"{site}\\"}})"}')
    settings = Settings()
    assert str(settings.prometheus_url) == "http://prometheus.monitoring:9090/"
    assert settings.dry_run and settings.watch_namespaces == ["factory", "vision"]
    assert settings.queries["link_bandwidth_bytes"].format(site="f", pool="p", namespace="n", workload="w",
                                                           variant="v") == 'avg(my_bw{site="f"})'
    assert settings.queries["request_success"] == DEFAULT_QUERIES["request_success"]


@pytest.mark.parametrize("variable, value, says", [
    ("HETPLACE_REBALANCE_INTERVAL_SECONDS", "0.5", "greater than or equal to 1"),
    ("HETPLACE_PROMETHEUS_URL", "not a url", "URL"),
    ("HETPLACE_QUERIES", '{"x": "up{{job=\\"{jobb}\\"}}"}', "jobb"),
    ("HETPLACE_WATCH_NAMESPACES", '["Factory"]', "not a namespace name"),
    ("HETPLACE_PEERING_NAME", "Hetplace!", "pattern"),
    ("HETPLACE_TRITON_ENDPOINT", "http://{service}:8000", "scheme"),
], ids=["a rebalance more often than every second is refused", "a Prometheus URL must be a URL",
        "a query naming an unknown placeholder is refused", "namespaces must be DNS labels",
        "the peering name must be a DNS label", "the Triton endpoint is host:port, not a URL"])
def test_bad_settings_stop_the_operator_naming_the_setting_and_the_rule(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert says in str(refused.value)
    assert variable.removeprefix("HETPLACE_").lower() in str(refused.value)


def test_hetplace_run_refuses_a_bad_setting_before_it_starts(monkeypatch):
    from click.testing import CliRunner

    from hetplace.cli import main

    monkeypatch.setenv("HETPLACE_REBALANCE_INTERVAL_SECONDS", "0")
    result = CliRunner().invoke(main, ["run", "--standalone"])
    assert result.exit_code == 1
    assert "HETPLACE_REBALANCE_INTERVAL_SECONDS='0'" in result.output and "greater than or equal to 1" in result.output


@pytest.mark.parametrize("value", ["factory,vision", " factory , vision ", '["factory", "vision"]'])
def test_watched_namespaces_are_a_json_list_or_comma_separated(monkeypatch, value):
    monkeypatch.setenv("HETPLACE_WATCH_NAMESPACES", value)
    assert Settings().watch_namespaces == ["factory", "vision"]


def test_hetplace_run_names_a_setting_that_is_not_json(monkeypatch):
    from click.testing import CliRunner

    from hetplace.cli import main

    monkeypatch.setenv("HETPLACE_QUERIES", "{not json")
    result = CliRunner().invoke(main, ["run", "--standalone"])
    assert result.exit_code == 1
    assert "HETPLACE_QUERIES='{not json': not valid JSON" in result.output and "internal error" not in result.output
