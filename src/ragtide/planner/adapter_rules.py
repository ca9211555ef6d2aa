"""prometheus-adapter's custom rules, read from its chart values and rendered as it does.

``ragtide plan --adapter-values`` uses this to show the exact PromQL each of the API's
HPA Pods metrics resolves to, and to refuse values whose metric names no rule publishes:
the most common reason a custom-metric HPA silently does nothing (``<unknown>/100`` in
``kubectl get hpa``, ``FailedGetPodsMetric`` in its events).

The adapter turns a request for a pods metric (``pods/http_requests_per_second`` for some
pods of one namespace) into PromQL by executing the rule's ``metricsQuery`` as a Go
template with ``<<``/``>>`` delimiters (kubernetes-sigs/prometheus-adapter,
``pkg/naming/metrics_query.go``):

* ``<<.Series>>``: the Prometheus series name the rule discovered;
* ``<<.LabelMatchers>>``: the namespace matcher, then the resource's, joined by ``,``;
  values are Go-quoted (``%q``), one object gives ``pod="a"``, several ``pod=~"a|b"``;
* ``<<.GroupBy>>``: the resource's label (``pod``).

The label names come from the rule's ``resources.overrides`` (the label mapped to the
``namespace`` resource and the one mapped to ``pod``). Only these three fields are
supported; any other template action is refused, so a rule this renderer cannot
reproduce fails loudly instead of being tested in a form the adapter would not run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ragtide.errors import ConfigError

__all__ = [
    "MetricQuery",
    "Rule",
    "hpa_metric_queries",
    "load_rules",
    "render",
    "rule_for",
    "rule_named",
    "with_range",
]

_ACTION = re.compile(r"<<(.*?)>>", re.S)
_FIELD = re.compile(r"\s*\.(Series|LabelMatchers|GroupBy)\s*")
_RANGE = re.compile(r"\[(?:\d+(?:ms|[smhdwy]))+\]")
_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\d+))")


def _go_quote(value: str) -> str:
    """Go's ``%q`` for the printable ASCII that label values (namespace, pod) are made of."""
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"label value {value!r} is outside what this renderer quotes")
    return json.dumps(value)


def render(template: str, *, series: str, label_matchers: str, group_by: str) -> str:
    """Execute ``template`` the way the adapter's Go template does, for these fields."""
    fields = {"Series": series, "LabelMatchers": label_matchers, "GroupBy": group_by}

    def field(match: re.Match[str]) -> str:
        inner = _FIELD.fullmatch(match.group(1))
        if inner is None:
            raise ValueError(f"unsupported template action <<{match.group(1)}>>")
        return fields[inner.group(1)]

    query = _ACTION.sub(field, template)
    if "<<" in query or ">>" in query:
        raise ValueError(f"unbalanced template delimiters in {template!r}")
    return query


def with_range(query: str, window: str) -> str:
    """``query`` with its one range selector (``[2m]``) replaced by ``[window]``.

    The test scrapes every second instead of every 30 s, so it shortens the window by
    the same factor; nothing else about the rule changes.
    """
    found = _RANGE.findall(query)
    if len(found) != 1:
        raise ValueError(f"expected exactly one range selector in {query!r}, found {found}")
    if _RANGE.fullmatch(f"[{window}]") is None:
        raise ValueError(f"{window!r} is not a PromQL duration")
    return _RANGE.sub(f"[{window}]", query)


_SERIES_NAME = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``rules.custom``."""

    series_query: str
    overrides: dict[str, str]  # Prometheus label -> Kubernetes resource
    matches: str
    as_: str
    metrics_query: str

    @property
    def series(self) -> str:
        """The series name ``seriesQuery`` selects (``name{...}`` form), or ``""``."""
        match = _SERIES_NAME.match(self.series_query)
        return match.group(1) if match else ""

    def label_for(self, resource: str) -> str:
        labels = [label for label, res in self.overrides.items() if res == resource]
        if len(labels) != 1:
            raise ValueError(f"no single label is mapped to resource {resource!r}")
        return labels[0]

    def api_name(self, series: str) -> str | None:
        """The custom-metrics name the adapter publishes ``series`` under, if it matches.

        Like the adapter: the first match of ``name.matches`` (unanchored), expanded into
        ``name.as``; an empty ``as`` means ``$0`` without capture groups, ``$1`` with one.
        """
        pattern = re.compile(self.matches)
        match = pattern.search(series)
        if match is None:
            return None
        template = self.as_
        if not template:
            if pattern.groups > 1:
                raise ValueError("name.as is required when name.matches has several groups")
            template = "$1" if pattern.groups == 1 else "$0"

        def group(ref: re.Match[str]) -> str:
            key = ref.group(1) or ref.group(2)
            return match.group(int(key) if key.isdigit() else key) or ""

        return _GROUP_REF.sub(group, template)

    def query(self, series: str, namespace: str, pods: Sequence[str]) -> str:
        """The PromQL the adapter sends for these pods of ``namespace``."""
        if not pods:
            raise ValueError("the adapter always asks for at least one object")
        pod_label = self.label_for("pod")
        if len(pods) == 1:
            pod_matcher = f"{pod_label}={_go_quote(pods[0])}"
        else:
            pod_matcher = f"{pod_label}=~{_go_quote('|'.join(pods))}"
        matchers = f"{self.label_for('namespace')}={_go_quote(namespace)},{pod_matcher}"
        return render(
            self.metrics_query, series=series, label_matchers=matchers, group_by=pod_label
        )


def _rule(entry: dict[str, Any]) -> Rule:
    overrides = entry["resources"]["overrides"]
    return Rule(
        series_query=entry["seriesQuery"],
        overrides={label: spec["resource"] for label, spec in overrides.items()},
        matches=entry["name"].get("matches", ".*"),
        as_=entry["name"].get("as", ""),
        metrics_query=entry["metricsQuery"],
    )


def load_rules(values: Path) -> list[Rule]:
    """The ``rules.custom`` list of a prometheus-adapter chart values file.

    Raises ``ConfigError`` naming the file when it cannot be read or has no such list.
    """
    try:
        data = yaml.safe_load(values.read_text())
        return [_rule(entry) for entry in data["rules"]["custom"]]
    except OSError as exc:
        raise ConfigError(f"cannot read prometheus-adapter values {values}: {exc}") from exc
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{values} is not prometheus-adapter values with rules.custom "
            f"(seriesQuery, resources.overrides, name, metricsQuery): {exc!r}"
        ) from exc


def rule_for(rules: Sequence[Rule], metric_name: str) -> Rule | None:
    """The first rule that publishes ``metric_name`` for the series it discovers."""
    for rule in rules:
        if rule.series and rule.api_name(rule.series) == metric_name:
            return rule
    return None


@dataclass(frozen=True, slots=True)
class MetricQuery:
    """One HPA Pods metric and the PromQL the adapter sends for it."""

    metric_name: str
    series: str
    promql: str


def hpa_metric_queries(
    metric_names: Sequence[str],
    rules: Sequence[Rule],
    *,
    namespace: str = "ragtide",
    pods: Sequence[str] = ("<pod>",),
) -> list[MetricQuery]:
    """The PromQL each HPA Pods metric resolves to, for ``pods`` of ``namespace``.

    Raises ``ConfigError`` listing every metric name no rule publishes, with the names
    the rules do publish: the HPA would report ``<unknown>`` for it and never scale on it.
    """
    queries, missing = [], []
    for name in metric_names:
        rule = rule_for(rules, name)
        if rule is None:
            missing.append(name)
            continue
        promql = rule.query(rule.series, namespace, pods)
        queries.append(MetricQuery(name, rule.series, promql))
    if missing:
        published = sorted(
            {n for r in rules if r.series and (n := r.api_name(r.series)) is not None}
        )
        raise ConfigError(
            f"HPA metric {', '.join(repr(m) for m in missing)} matches no prometheus-adapter "
            f"rule (the adapter publishes {published}): the HPA would show <unknown> and "
            "never scale on it; fix autoscaling.*.metricName or the adapter's rules"
        )
    return queries


def rule_named(rules: Sequence[Rule], api_name: str) -> Rule:
    """The one rule whose ``name.as`` publishes ``api_name``."""
    found = [r for r in rules if r.as_ == api_name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} rules publish {api_name!r}")
    return found[0]
