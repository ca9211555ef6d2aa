"""Autoscaling planner: replay a traffic trace through the HPA/KEDA model before deploying.

``ragtide plan`` answers "with these chart values, how many replicas will I have, what
will p99 be, what will it cost, and which settings would be better?". The pieces:

* ``hpa``: a pure, exact model of the HPA controller (replica calculator, stabilization,
  rate-limit policies, scale events);
* ``keda``: KEDA's RabbitMQ scaler, activation and cooldown;
* ``adapter``: the metrics pipeline (metrics-server, Prometheus scrape, ``rate()``);
* ``capacity``: what one replica can do (``capacity.json``, from ``ragtide bench capacity``);
* ``values``: the chart's ``autoscaling`` / ``worker.keda`` values;
* ``traffic``: trace CSV and synthetic shapes;
* ``queueing``: latency versus load;
* ``simulate``: the 1 s replay; ``recommend``: the search for cheaper, safe values;
* ``report``: JSON, PNG and the summary; ``cli``: ``ragtide plan``.
"""

from __future__ import annotations

__all__: list[str] = []
