"""The metric chain up to the adapter: app metrics -> real Prometheus -> adapter PromQL.

Two ``ragtide serve`` replicas are scraped every second by a real Prometheus that labels
them the way a ServiceMonitor does. The adapter's rules are read from
``deploy/prometheus-adapter/values.yaml``, discovered through ``/api/v1/series`` and
rendered exactly as prometheus-adapter renders them for the HPA's pods request; the test
then runs that PromQL through ``/api/v1/query`` and compares each pod's value with the
load it was offered:

* ``http_requests_per_second``: an open-loop chat load of 40 req/s on one replica and
  20 req/s on the other, with kubelet-style probes on both that must not count;
* ``http_requests_in_flight``: 3 and 7 chat turns held open inside the replicas (their
  LLM answers only when the test releases them); an idle replica reads 0, although
  Prometheus reads the gauge while its own scrape is being served.

The only change to the rules is the rate window: scrapes come every 1 s instead of
30 s, so ``[2m]`` becomes ``[6s]``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragtide.bench.server import open_loop
from tests.polling import until

from .adapter import Rule, load_rules, with_range
from .prom_load import Probes, Replica, StubLLM, hold
from .prom_server import Prometheus, Target

pytestmark = pytest.mark.integration

VALUES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus-adapter" / "values.yaml"
NAMESPACE = "ragtide-prod"
PODS = ("ragtide-7c9f8d6b5-k2x4q", "ragtide-7c9f8d6b5-p9m3z")
WINDOW_S = 6.0  # the rules' 2m window, for scrapes every 1 s instead of 30 s
TEST_WINDOW = f"{WINDOW_S:g}s"
# Correctness bound, not a measurement: the HPA scales on these values, so a rule that
# counts probes, double-counts a route or reads the wrong window is off by far more than
# 10% (probes alone add > 2x TOLERANCE of the offered rate, checked below); 10% is the
# open-loop load's own jitter over a 6 s window plus a scrape's misalignment.
TOLERANCE = 0.10
QUESTIONS = [
    {"message": "How does Ragtide scale?"},
    {"message": "What does the readiness probe check?"},
    {"message": "How are documents split into chunks?"},
    {"message": "What happens on SIGTERM?"},
]


@dataclass(slots=True)
class Chain:
    prometheus: Prometheus
    replicas: dict[str, Replica]  # by pod name
    llm: StubLLM
    rules: dict[str, tuple[Rule, str]]  # API metric name -> (rule, discovered series)

    def adapter_query(self, metric: str, window: str | None = None) -> str:
        """The PromQL the adapter runs for the HPA's request for both pods."""
        rule, series = self.rules[metric]
        query = rule.query(series, NAMESPACE, list(self.replicas))
        return with_range(query, window) if window else query

    def wait_for_scrape_after(self, moment: float) -> None:
        until(lambda: self.prometheus.scraped_after(moment), f"a scrape after {moment}", 20)


def _discover(prometheus: Prometheus, rules: list[Rule]) -> dict[str, tuple[Rule, str]]:
    """What the adapter publishes: series found by each seriesQuery, renamed by its rule."""
    published: dict[str, tuple[Rule, str]] = {}
    for rule in rules:
        for name in sorted({s["__name__"] for s in prometheus.series(rule.series_query)}):
            api_name = rule.api_name(name)
            if api_name is not None:
                assert api_name not in published, f"two series publish {api_name}"
                published[api_name] = (rule, name)
    return published


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("metric-chain")
    llm = StubLLM()
    llm.start()
    replicas: list[Replica] = []
    prometheus: Prometheus | None = None
    try:
        replicas = [Replica.spawn(root, llm.url) for _ in PODS]
        for r in replicas:
            r.wait_ready()
            r.ingest_demo()  # also creates the request counter's series
        targets = [Target(r.port, NAMESPACE, pod) for r, pod in zip(replicas, PODS, strict=True)]
        prometheus = Prometheus(root / "prometheus", targets)
        prometheus.start()
        started = time.time()
        chain = Chain(prometheus, dict(zip(PODS, replicas, strict=True)), llm, {})
        chain.wait_for_scrape_after(started)
        chain.rules = _discover(prometheus, load_rules(VALUES))
        yield chain
    finally:
        llm.release()
        if prometheus is not None:
            prometheus.stop()
        for r in replicas:
            r.stop()
        llm.stop()


def test_the_adapter_publishes_the_names_the_hpa_asks_for(chain: Chain) -> None:
    discovered = {name: series for name, (_, series) in chain.rules.items()}
    assert discovered == {
        "http_requests_per_second": "ragtide_http_requests_total",
        "http_requests_in_flight": "ragtide_http_requests_in_flight",
    }
    # Prometheus accepts both rendered queries, and they answer for the HPA's pods only.
    rate = chain.adapter_query("http_requests_per_second", TEST_WINDOW)
    assert set(chain.prometheus.query(rate)) <= set(PODS)
    assert set(chain.prometheus.query(chain.adapter_query("http_requests_in_flight"))) == set(PODS)


def test_an_idle_replica_has_nothing_in_flight_and_the_scrape_does_not_count(
    chain: Chain,
) -> None:
    chain.wait_for_scrape_after(time.time())
    raw = chain.prometheus.query(f'ragtide_http_requests_in_flight{{namespace="{NAMESPACE}"}}')
    assert raw == dict.fromkeys(PODS, 0.0), "the scrape counted itself in flight"
    assert chain.prometheus.query(chain.adapter_query("http_requests_in_flight")) == dict.fromkeys(
        PODS, 0.0
    )


def test_in_flight_per_pod_is_the_number_of_requests_held_open(chain: Chain) -> None:
    offered = dict(zip(PODS, (3, 7), strict=True))
    with ThreadPoolExecutor(max_workers=sum(offered.values())) as pool:
        futures = []
        try:
            for pod, n in offered.items():
                futures += hold(pool, chain.replicas[pod], n)
            total = sum(offered.values())
            until(lambda: chain.llm.held == total or None, f"{total} turns at the LLM", 30)
            chain.wait_for_scrape_after(time.time())
            seen = chain.prometheus.query(chain.adapter_query("http_requests_in_flight"))
        finally:
            chain.llm.release()
        statuses = [f.result(timeout=60) for f in futures]
    assert statuses == [200] * len(statuses)
    print(f"\nin flight: offered {offered}, adapter {seen}")
    assert set(seen) == set(PODS)
    for pod, n in offered.items():
        assert seen[pod] == pytest.approx(n, rel=TOLERANCE), (pod, seen, offered)


def test_request_rate_per_pod_is_the_offered_load_and_probes_do_not_count(chain: Chain) -> None:
    offered = dict(zip(PODS, (40.0, 20.0), strict=True))
    lead, tail = 1.5, 1.0  # the measured window lies inside the load, clear of both edges
    seconds = lead + WINDOW_S + tail
    results: dict[str, dict[str, Any]] = {}

    def load(pod: str) -> None:
        replica = chain.replicas[pod]
        results[pod] = open_loop(replica.port, replica.chat_path, QUESTIONS, offered[pod], seconds)

    threads = [threading.Thread(target=load, args=(pod,)) for pod in PODS]
    with Probes(list(chain.replicas.values()), rate=10.0) as probes:
        began = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
    at = began + lead + WINDOW_S
    chain.wait_for_scrape_after(at)
    seen = chain.prometheus.query(chain.adapter_query("http_requests_per_second", TEST_WINDOW), at)

    print(f"\nrate: offered {offered}, adapter {seen}, probes {probes.sent}, load {results}")
    for pod in PODS:
        assert results[pod]["failures"] == 0, results[pod]
    # Probes were a load the rate would have shown, had they been counted.
    assert probes.failed == 0, probes
    assert probes.per_pod_rate() > 2 * TOLERANCE * max(offered.values()), probes
    assert set(seen) == set(PODS)
    for pod, rate in offered.items():
        assert seen[pod] == pytest.approx(rate, rel=TOLERANCE), (pod, seen, offered)
