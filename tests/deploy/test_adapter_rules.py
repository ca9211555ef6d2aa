"""The adapter values file and the renderer the metric-chain test relies on (no servers).

The renderer's expected strings follow prometheus-adapter's own code: matchers built
with Go's ``%q``, the namespace matcher first, ``=`` for one object and ``=~`` with
``|`` for several, the resource label as the group-by.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ragtide.api.routes.health import router as health_router
from ragtide.observability import HTTP_IN_FLIGHT, HTTP_REQUESTS

from .adapter import Rule, load_rules, render, rule_named, with_range

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus-adapter" / "values.yaml"
TEMPLATE = "sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)"


def _rule(metrics_query: str = TEMPLATE, matches: str = "^(.*)_total$", as_: str = "") -> Rule:
    overrides = {"namespace": "namespace", "kubernetes_pod": "pod"}
    return Rule('{__name__="x"}', overrides, matches, as_, metrics_query)


def test_several_pods_render_as_a_regex_after_the_namespace() -> None:
    query = _rule().query("http_requests_total", "somens", ["pod1", "pod2"])
    assert query == (
        'sum(rate(http_requests_total{namespace="somens",kubernetes_pod=~"pod1|pod2"}[2m]))'
        " by (kubernetes_pod)"
    )


def test_one_pod_renders_as_an_equality() -> None:
    query = _rule().query("http_requests_total", "somens", ["pod1"])
    assert 'namespace="somens",kubernetes_pod="pod1"}' in query


def test_template_actions_other_than_the_three_fields_are_refused() -> None:
    for template in ("<<.LabelValuesByName>>", "<<range .GroupBySlice>>x<<end>>", "a <<.Series"):
        with pytest.raises(ValueError):
            render(template, series="s", label_matchers="m", group_by="g")


def test_names_follow_matches_and_as_like_the_adapter() -> None:
    assert _rule().api_name("http_requests_total") == "http_requests"  # one group: $1
    assert _rule(as_="${1}_per_second").api_name("http_requests_total") == (
        "http_requests_per_second"
    )
    assert _rule(matches="^up$").api_name("up") == "up"  # no group: $0
    assert _rule().api_name("http_requests_in_flight") is None


def test_with_range_swaps_the_one_window() -> None:
    assert with_range("rate(x[2m])", "6s") == "rate(x[6s])"
    with pytest.raises(ValueError):
        with_range("rate(x[2m]) / rate(y[5m])", "6s")
    with pytest.raises(ValueError):
        with_range("x", "6s")


def test_values_publish_exactly_the_hpa_names_from_ragtide_metrics() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert values["rules"]["default"] is False  # nothing else is published
    rules = load_rules(VALUES)
    assert sorted(r.as_ for r in rules) == ["http_requests_in_flight", "http_requests_per_second"]
    # The names Ragtide exposes (prometheus_client adds _total to a counter).
    (counter,) = HTTP_REQUESTS.describe()
    (gauge,) = HTTP_IN_FLIGHT.describe()
    assert (counter.type, gauge.type) == ("counter", "gauge")
    rate = rule_named(rules, "http_requests_per_second")
    inflight = rule_named(rules, "http_requests_in_flight")
    assert rate.api_name(counter.name + "_total") == "http_requests_per_second"
    assert inflight.api_name(gauge.name) == "http_requests_in_flight"
    assert rate.api_name(gauge.name) is None and inflight.api_name(counter.name + "_total") is None
    for rule in rules:
        assert rule.label_for("namespace") == "namespace" and rule.label_for("pod") == "pod"
        for field in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert field in rule.metrics_query


def test_the_rate_rule_excludes_every_probe_and_metrics_route() -> None:
    rate = rule_named(load_rules(VALUES), "http_requests_per_second")
    excluded = re.search(r'route!~"([^"]+)"', rate.metrics_query)
    assert excluded is not None
    probe_routes = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    assert probe_routes == {"/healthz", "/ready", "/metrics"}
    for path in probe_routes:  # PromQL regexes are anchored at both ends
        assert re.fullmatch(excluded.group(1), path)
    assert not re.fullmatch(excluded.group(1), "/v1/namespaces/{namespace}/chat")
