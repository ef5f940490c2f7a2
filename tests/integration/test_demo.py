"""`runwatch demo` end to end: real training, real server, real client."""

from __future__ import annotations

import subprocess
import sys

from runwatch.service.demo import ORDER, run_demo
from runwatch.v1 import anomaly_pb2


def test_demo_flags_divergence_early_and_leaves_healthy_run_alone(tmp_path):
    lines: list[str] = []
    report = run_demo(data_dir=tmp_path / "demo", seed=0, out=lines.append)
    assert report.ok, "\n".join(lines)
    healthy, diverging, overshooting, overfit, stuck = (report.outcomes[n] for n in ORDER)
    assert healthy.flags == [] and healthy.final_val_acc > 0.9
    # Preempted at step 150 and resumed under the same id: one finished run, the re-logged steps dropped.
    assert healthy.resumed is not None and healthy.resumed[1:] == (300, 10)
    assert diverging.first_nonfinite_step is not None
    assert diverging.first_flag_step < diverging.first_nonfinite_step
    first = min(diverging.flags, key=lambda a: a.first_step)
    assert first.kind == anomaly_pb2.ANOMALY_KIND_DIVERGENCE_PREDICTED
    # The warm-up towards 40x a good rate: the learned forecaster predicts it before the loss-trend rule sees the
    # climb, and long before the loss overflows.
    forecast = [a for a in overshooting.flags if a.detector == "learned" and a.kind == first.kind]
    trend = [a for a in overshooting.flags if a.detector == "divergence"]
    assert forecast and trend and overshooting.first_nonfinite_step is not None
    assert forecast[0].first_step < min(a.first_step for a in trend) < overshooting.first_nonfinite_step
    assert "divergence expected within ~" in forecast[0].explanation
    assert "OVERFITTING" in overfit.kinds() and overfit.first_nonfinite_step is None
    # A learning rate far too small: flagged as not learning once 500 steps are in, and nothing else alerts.
    no_learning = [a for a in stuck.flags if a.detector == "no_learning"]
    assert no_learning and no_learning[0].kind == anomaly_pb2.ANOMALY_KIND_PLATEAU and no_learning[0].first_step >= 500
    assert stuck.kinds() <= {"PLATEAU"} and stuck.final_val_acc < 0.2
    # The diverging run's text stop message is read too: a LOG_PATTERN alert with the line as evidence.
    text = [a for a in diverging.flags if a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN]
    assert text and "stopping training" in text[0].log_lines[0] and text[0].detector == "log_text"
    # Anomalies stream in over the watch call; each run's are shown before its summary line.
    done_at = next(i for i, line in enumerate(lines) if "'diverging' done" in line)
    assert any("ANOMALY" in line and "DIVERGENCE_PREDICTED" in line for line in lines[:done_at])
    # The deployment's router log, sent as text only: its per-token latency is flagged once decoding slows.
    assert report.checks[-1][1] and "LATENCY flagged at request" in report.checks[-1][0]
    assert any("ANOMALY demo-serving-" in line and "LATENCY" in line for line in lines)
    assert (tmp_path / "demo" / "runwatch.db").exists()
    assert any("dashboard: http://127.0.0.1:" in line for line in lines[:3])


def test_demo_command_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "runwatch.service.cli", "demo", "--seed", "1"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("[ok]") == 8
