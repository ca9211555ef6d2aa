"""prometheus-adapter's custom rules, read from our chart values and rendered as it does.

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

__all__ = ["Rule", "load_rules", "render", "rule_named", "with_range"]

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


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of ``rules.custom``."""

    series_query: str
    overrides: dict[str, str]  # Prometheus label -> Kubernetes resource
    matches: str
    as_: str
    metrics_query: str

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
    """The ``rules.custom`` list of a prometheus-adapter chart values file."""
    data = yaml.safe_load(values.read_text())
    return [_rule(entry) for entry in data["rules"]["custom"]]


def rule_named(rules: Sequence[Rule], api_name: str) -> Rule:
    """The one rule whose ``name.as`` publishes ``api_name``."""
    found = [r for r in rules if r.as_ == api_name]
    if len(found) != 1:
        raise LookupError(f"{len(found)} rules publish {api_name!r}")
    return found[0]
