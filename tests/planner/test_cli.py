"""``ragtide plan`` end to end on small inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtide.planner.cli import main


def test_plan_from_a_trace_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,rps\n0,40\n120,80\n599,80\n")
    values = tmp_path / "values.yaml"
    values.write_text("autoscaling: {minReplicas: 3}\n")
    out = tmp_path / "out"
    status = main(
        [
            "--trace",
            str(trace),
            "--values",
            str(values),
            "--out",
            str(out),
            "--no-recommend",
            "--no-chart",
            "--slo-p99-ms",
            "900",
        ]
    )
    assert status == 0
    doc = json.loads((out / "timeline.json").read_text())
    assert doc["summary"]["slo_p99_ms"] == 900 and doc["summary"]["seconds"] == 600
    assert doc["timeline"]["replicas_desired"][0] >= 3
    assert "current values:" in capsys.readouterr().out


def test_synthetic_shape_parameters_reach_the_generator(tmp_path: Path) -> None:
    status = main(
        [
            "--synthetic",
            "spike",
            "--base",
            "20",
            "--peak",
            "60",
            "--at",
            "60",
            "--spike-seconds",
            "30",
            "--duration",
            "300",
            "--out",
            str(tmp_path),
            "--no-recommend",
            "--no-chart",
        ]
    )
    assert status == 0
    load = json.loads((tmp_path / "timeline.json").read_text())["timeline"]["load_rps"]
    assert (load[59], load[60], load[90]) == (20, 60, 20)


def test_invalid_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("autoscaling: {maxReplicas: 0}\n")
    status = main(["--synthetic", "step", "--values", str(values), "--out", str(tmp_path)])
    assert status == 2
    assert "invalid chart values" in capsys.readouterr().err
    assert main(["--trace", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2


def test_trace_and_synthetic_are_exclusive() -> None:
    with pytest.raises(SystemExit):
        main(["--trace", "a.csv", "--synthetic", "step"])
