"""Every planner module pins an explicit, sorted ``__all__`` of names it defines."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "ragtide.planner",
    "ragtide.planner.hpa",
    "ragtide.planner.hpa.types",
    "ragtide.planner.hpa.calculator",
    "ragtide.planner.hpa.pods",
    "ragtide.planner.hpa.normalize",
    "ragtide.planner.hpa.controller",
    "ragtide.planner.adapter",
    "ragtide.planner.analysis",
    "ragtide.planner.behavior_values",
    "ragtide.planner.capacity",
    "ragtide.planner.cli",
    "ragtide.planner.fleet",
    "ragtide.planner.keda",
    "ragtide.planner.model_analysis",
    "ragtide.planner.model_recommend",
    "ragtide.planner.model_replay",
    "ragtide.planner.model_report",
    "ragtide.planner.model_tier",
    "ragtide.planner.model_values",
    "ragtide.planner.plan",
    "ragtide.planner.queueing",
    "ragtide.planner.recommend",
    "ragtide.planner.report",
    "ragtide.planner.simulate",
    "ragtide.planner.traffic",
    "ragtide.planner.values",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(module, n) for n in exported)


def test_importing_the_planner_does_not_load_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, ragtide.planner.cli; print('matplotlib' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "False"
