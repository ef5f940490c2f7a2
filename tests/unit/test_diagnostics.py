"""The streaming diagnostics on real (small, CPU) PyTorch training and inference runs.

Every run here is real: an MLP trained on scikit-learn's bundled digits or
diabetes data, with the telemetry a training loop logs (see ``training.py``).
Each diagnostic gets at least one faulty run where it must fire, with a
plausible step, and the whole default suite must stay silent on healthy runs.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from functools import cache

import numpy as np
import pytest
from training import Event, Run, RunConfig, cosine_restarts, inference_requests, train, warmup_cosine

from runwatch.models.alerting import Alert
from runwatch.models.base import Diagnostic, DiagnosticConfig
from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Finding, Severity
from runwatch.models.registry import DIAGNOSTICS, DiagnosticSuite, SuiteConfig, diagnostic_class

# --------------------------------------------------------------------------- runs


def _ramp(steps: int):
    """Linear learning-rate warm-up over ``steps`` steps, then constant."""
    return lambda s: 1.0 if s >= steps else (s + 1) / steps


def _bias(value: float):
    def init(model) -> None:
        for _, lin in model.linears[:-1]:
            lin.bias.fill_(value)

    return init


def _scale_weights(k: float):
    def init(model) -> None:
        for _, lin in model.linears:
            lin.weight.mul_(k)

    return init


def _small_normal(std: float):
    def init(model) -> None:
        for _, lin in model.linears:
            lin.weight.normal_(0.0, std)
            lin.bias.zero_()

    return init


HEALTHY = {
    # The brief's baseline: Adam 1e-3 MLP on digits, batch 16 and 128, with and without
    # a warm-up + cosine schedule. The whole default suite must stay silent.
    "adam_bs128": RunConfig(),
    "adam_bs16": RunConfig(batch_size=16),
    "adam_bs128_warmup_cosine": RunConfig(schedule=warmup_cosine(30, 300)),
    "adam_bs16_warmup_cosine": RunConfig(batch_size=16, schedule=warmup_cosine(30, 300)),
    # More healthy shapes the trend detectors must tolerate.
    "adam_bs16_lr_restarts": RunConfig(batch_size=16, steps=500, schedule=cosine_restarts(100)),
    "adam_bs32_tanh": RunConfig(batch_size=32, activation="tanh"),
}

FAULTY = {
    # Learning rate above the stability limit (SGD, MSE regression on diabetes): the loss
    # climbs exponentially and overflows. Warm-up ramps make the climb start mid-run.
    "diverge_linear": RunConfig(
        dataset="diabetes", optimizer="sgd", lr=3.0, schedule=_ramp(150), batch_size=64, hidden=()
    ),
    "diverge_tanh": RunConfig(
        dataset="diabetes", optimizer="sgd", lr=2.0, schedule=_ramp(150), batch_size=64, activation="tanh"
    ),
    "diverge_momentum": RunConfig(
        dataset="diabetes", optimizer="sgd", lr=0.2, momentum=0.9, batch_size=64, activation="tanh"
    ),
    "diverge_immediately": RunConfig(dataset="diabetes", optimizer="sgd", lr=0.5, batch_size=64, activation="tanh"),
    # A warm-up so slow (2,500 steps) that the loss first falls for ~200 steps, then climbs for
    # ~100 steps once the learning rate crosses the stability limit: a full plateau window
    # of a rising loss.
    "diverge_slow": RunConfig(
        dataset="diabetes", optimizer="sgd", lr=3.0, schedule=_ramp(2500), batch_size=64, hidden=(), steps=600
    ),
    # Deep sigmoid stack with small init: gradients shrink ~4x per layer.
    "vanishing": RunConfig(hidden=(32,) * 8, activation="sigmoid", init=_small_normal(0.05), steps=60),
    # ReLU net with a large negative bias: every unit outputs 0.
    "dead_relu": RunConfig(init=_bias(-3.0), steps=60),
    # tanh net with 10x weights: most units pinned at +-1.
    "saturated_tanh": RunConfig(activation="tanh", init=_scale_weights(10.0), steps=60),
    # A learning rate far too small: the loss does not move.
    "tiny_lr": RunConfig(optimizer="sgd", lr=1e-5, steps=260),
    # 64 training samples, a wide net, no regularisation, validation every 5 steps.
    "overfit": RunConfig(train_subset=64, batch_size=64, hidden=(256, 256), lr=3e-3, steps=120, val_every=5),
    # One corrupted batch at step 200: inputs x50, or shuffled labels.
    "bad_batch_scaled": RunConfig(batch_size=64, steps=260, corrupt_step=200, corrupt="scale"),
    "bad_batch_labels": RunConfig(batch_size=64, steps=260, corrupt_step=200, corrupt="labels"),
    # The loop keeps a copy of the weights every step (~0.7 MB/step).
    "leak": RunConfig(hidden=(384, 384), steps=140, leak=True),
    # The data iterator sleeps 4 ms per batch (decoding on the main thread).
    "slow_data": RunConfig(steps=60, data_sleep_s=0.008),
    # fc1 was left out of the optimizer: its weights never change.
    "frozen_fc1": RunConfig(frozen=("fc1",), steps=60),
    # The schedule drops the learning rate to exactly 0 for the last 20 steps.
    "lr_to_zero": RunConfig(steps=120, schedule=lambda s: 0.0 if s >= 100 else 1.0),
}


# Runs whose telemetry includes the process's own memory are trained in a fresh process: RSS
# measured inside the test process depends on what other tests loaded before.
FRESH_PROCESS = {"leak"}


@cache
def run(name: str) -> Run:
    cfg = HEALTHY.get(name) or FAULTY[name]
    if name in FRESH_PROCESS:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(train, cfg).result()
    return train(cfg)


@cache
def requests(kind: str) -> list[Event]:
    if kind == "healthy":
        return inference_requests(600)
    if kind == "burst":  # a client suddenly sends 60,000-row batches for 8 requests
        return inference_requests(600, burst=(400, 408), burst_batch=60_000)
    if kind == "leak":  # each request scans a cache that is never evicted: latency creeps up
        return inference_requests(1000, leak=True)
    return inference_requests(600, malformed=(400, 600), malformed_frac=0.3)


def feed(events: list[Event], suite: DiagnosticSuite | None = None, run_id: str = "run") -> list[Alert]:
    """All alerts the monitor raises on the events, fed one by one as a client sends them."""
    monitor = (suite or DiagnosticSuite(SuiteConfig(enabled=[n for n in DIAGNOSTICS if n != "learned"]))).monitor(run_id)
    alerts: list[Alert] = []
    for step, wall_time, metrics in events:
        alerts.extend(monitor.observe(step, wall_time, metrics))
    return alerts


def first(alerts: list[Alert], kind: AnomalyKind, key: str | None = None) -> Alert | None:
    hits = [a for a in alerts if a.finding.kind == kind and (key is None or a.finding.key == key)]
    return min(hits, key=lambda a: a.first_step) if hits else None


def show(alerts: list[Alert]) -> str:
    return "\n".join(
        f"{a.finding.detector} {a.finding.kind.name} @{a.first_step}: {a.finding.explanation}" for a in alerts
    )


# ------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_registered_diagnostic_is_documented_and_versioned(name: str) -> None:
    cls = diagnostic_class(name)
    assert issubclass(cls, Diagnostic) and cls.name == name and cls.version.isdigit()
    assert issubclass(cls.config_class, DiagnosticConfig) and cls.config_class is not DiagnosticConfig
    assert len(cls.reference) > 10
    assert ">>>" in (cls.__doc__ or ""), "needs a runnable example"


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_config_round_trips_through_json(name: str) -> None:
    cls = diagnostic_class(name)
    default = cls.config_class()
    assert cls.config_class.from_json(default.to_json()) == default
    # Change every field and check the change survives too.
    changed: dict = {}
    for field, value in default.to_dict().items():
        if isinstance(value, bool):
            changed[field] = not value
        elif isinstance(value, int):
            changed[field] = value + 1
        elif isinstance(value, float):
            changed[field] = value * 0.5 if 0.0 < value <= 1.0 else value + 1.0
        elif isinstance(value, str) and field != "artifact":  # a path that must exist
            changed[field] = value + "x"
        elif isinstance(value, list):
            changed[field] = [*value, "x/y"]
    cfg = cls.config_class(**{**default.to_dict(), **changed})
    back = cls.config_class.from_json(cfg.to_json())
    assert back == cfg and back != default
    assert back.to_dict() == {**default.to_dict(), **changed}
    # ...and through the suite configuration the service reads.
    suite_cfg = SuiteConfig(enabled=[name], settings={name: cfg.to_dict()})
    suite = DiagnosticSuite(SuiteConfig.model_validate_json(suite_cfg.model_dump_json()))
    assert suite.monitor("r").diagnostics[0].config == cfg


# ------------------------------------------------------------ NaN / Inf handling

_METRICS = [
    "loss",
    "val/loss",
    "grad_norm",
    "grad_norm/fc1",
    "grad_norm/fc2",
    "update_ratio/fc1",
    "act/zero_frac/fc1",
    "act/sat_frac/fc1",
    "lr",
    "step_time",
    "data_time",
    "cpu_mem",
    "gpu_mem",
    "latency_ms",
    "latency_ms/p99",
    "error_rate",
]


def _blocks(rows: list[Event], size: int):
    """``rows`` as MetricBlocks of ``size`` events."""
    for i in range(0, len(rows), size):
        yield MetricBlock.from_rows(*zip(*rows[i : i + size]))


def _findings(diag: Diagnostic, events: list[Event], poison_every: int = 0, size: int = 1) -> list[tuple]:
    """What ``diag`` finds in the events' ``_METRICS``, fed in blocks of ``size`` events.

    With ``poison_every``, every so many events are preceded by three events of
    the same step whose values are NaN, +Inf and -Inf. Non-finite findings are
    left out (they are the nonfinite diagnostic's job).
    """
    rows: list[Event] = []
    for i, (step, wall, metrics) in enumerate(events):
        metrics = {k: v for k, v in metrics.items() if k in _METRICS}
        if poison_every and i % poison_every == 0:
            rows.extend((step, wall, dict.fromkeys(metrics, bad)) for bad in (math.nan, math.inf, -math.inf))
        rows.append((step, wall, metrics))
    out = []
    for block in _blocks(rows, size):
        for f in diag.observe_block(block):
            assert f is None or isinstance(f, Finding)
            if f.kind != AnomalyKind.NONFINITE:
                out.append((f.kind, f.step, f.key, round(f.score, 9)))
    return out


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_handlers_skip_nan_and_inf_without_raising_or_corrupting_state(name: str) -> None:
    cls = diagnostic_class(name)
    # A real training fault (one corrupted batch at step 200), with deployment metrics (a
    # latency burst at step 250) and a growing gpu_mem in the same stream, so that every
    # handler sees real values and some fire.
    events = []
    for (step, wall, metrics), (_, _, req) in zip(run("bad_batch_scaled").events, requests("burst")[150:]):
        events.append((step, wall, {**metrics, **req, "gpu_mem": 1000.0 + step}))
    clean = _findings(cls(), events)
    poisoned = _findings(cls(), events, poison_every=3)
    assert poisoned == clean
    # The same in blocks (poisoned events share their step with the next clean one).
    assert _findings(cls(), events, poison_every=3, size=64) == clean
    if name in ("loss_spike", "exploding_gradient", "memory_growth", "latency"):
        assert clean, "the stream holds a real fault this diagnostic must see"
    # NaN/Inf as the very first values, in short blocks (value by value) and long ones
    # (vectorised quiet paths).
    for n in (2, 40):
        diag = cls()
        bad = (math.nan, math.inf, -math.inf)
        rows = [{m: bad[i % 3] for m in _METRICS} for i in range(n)]
        block = MetricBlock.from_rows(list(range(n)), [1.0 + i for i in range(n)], rows)
        found = diag.observe_block(block)
        assert all(f.kind == AnomalyKind.NONFINITE for f in found) and bool(found) == (name == "nonfinite")
        assert diag.on_idle(10.0 + n, 1.0 + n, n) is None


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_handlers_never_raise_on_extreme_finite_values(name: str) -> None:
    cls = diagnostic_class(name)
    streams = {
        "zeros": [0.0] * 200,
        "negative": [-1.0 - 0.01 * i for i in range(200)],
        "huge": [1e308 * (0.5 + 0.5 * (i % 2)) for i in range(200)],
        "subnormal": [1e-320] * 200,
        "from_zero_exploding": [0.0] * 40 + [1.2**i for i in range(160)],
        "mixed": [(0.0, -5.0, 1e308, 1e-320, 3.0, math.nan, math.inf)[i * 7 % 11 % 7] for i in range(400)],
    }
    for values, size in itertools.product(streams.values(), (1, 64)):
        diag = cls()
        rows = [(i, 1000.0 + i, dict.fromkeys(_METRICS, v)) for i, v in enumerate(values)]
        for block in _blocks(rows, size):
            for f in diag.observe_block(block):
                assert f is None or isinstance(f, Finding)
        assert diag.on_idle(5000.0, 1000.0 + len(values), len(values)) is None or name == "stalled"


# ----------------------------------------------------------- healthy: silence


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_whole_default_suite_is_silent_on_healthy_training(name: str, default_suite: DiagnosticSuite, service_suite: DiagnosticSuite) -> None:
    r = run(name)
    losses = [m["loss"] for _, _, m in r.events]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-20:]) / 20 < 0.3 * losses[0], "the healthy run must actually learn"
    for suite in (default_suite, service_suite):
        alerts = [a for a in feed(r.events, suite, name) if a.finding.severity >= Severity.WARNING]
        assert alerts == [], show(alerts)


def test_whole_default_suite_is_silent_on_healthy_inference(default_suite: DiagnosticSuite) -> None:
    events = requests("healthy")
    assert len(events) == 600 and sum("error_rate" in m for _, _, m in events) == 12
    alerts = feed(events, default_suite, "serving")
    assert alerts == [], show(alerts)


@pytest.mark.parametrize(
    "name",
    ["adam_bs16", "diverge_momentum", "bad_batch_scaled", "vanishing", "dead_relu", "saturated_tanh"]
    + ["frozen_fc1", "lr_to_zero", "lr_to_zero/no_lr", "leak", "slow_data"]
    + ["adam_bs16/poisoned", "dead_relu/poisoned", "frozen_fc1/poisoned"],
)
def test_blocks_and_event_by_event_feeding_raise_the_same_alerts(name: str, default_suite: DiagnosticSuite) -> None:
    # The service feeds blocks of events (vectorised quiet paths, column-wise handlers);
    # a client library feeds events one by one. Both must raise exactly the same alerts.
    base, _, variant = name.partition("/")
    events = run(base).events
    if variant == "no_lr":
        events = [(s, w, {k: v for k, v in m.items() if k != "lr"}) for s, w, m in events]
    elif variant == "poisoned":  # every 9th event's metrics are NaN or +-Inf
        bad = (math.nan, math.inf, -math.inf)
        events = [(s, w, {k: bad[s % 3] for k in m} if s % 9 == 4 else m) for s, w, m in events]

    def summary(alerts: list[Alert]) -> list[tuple]:
        return [
            (a.finding.detector, a.finding.kind, a.finding.key, a.finding.step, a.state, a.revision, a.finding.score)
            for a in alerts
        ]

    expected = summary(feed(events, default_suite))
    others = [e for e in expected if e[0] != "nonfinite"]
    assert bool(others) == (name not in ("adam_bs16", "lr_to_zero", "adam_bs16/poisoned"))
    if variant == "poisoned":  # the NaNs change nothing but nonfinite's own findings
        clean = summary(feed(run(base).events, default_suite))
        assert {e[1] for e in expected if e[0] != "nonfinite"} == {e[1] for e in clean}
    for size in (7, 64, 500):
        monitor = default_suite.monitor("run")
        got: list[Alert] = []
        for i in range(0, len(events), size):
            got.extend(monitor.observe_block(MetricBlock.from_rows(*zip(*events[i : i + size]))))
        assert summary(got) == expected, size


# --------------------------------------------------------------- loss spikes


@pytest.mark.parametrize("corruption", ["bad_batch_scaled", "bad_batch_labels"])
def test_loss_spike_fires_on_the_corrupted_batch(corruption: str, default_suite: DiagnosticSuite) -> None:
    alerts = feed(run(corruption).events, default_suite)
    spike = first(alerts, AnomalyKind.LOSS_SPIKE)
    assert spike is not None, show(alerts)
    assert spike.first_step == 200 and spike.finding.metric == "loss"
    assert spike.finding.score >= 32  # robust z; INFO from 8, an alert from 32 (LossSpikeConfig.alert_z)
    assert spike.finding.severity.name in ("WARNING", "ERROR", "CRITICAL")
    # It is one incident: nothing else about the loss before or after the bad batch.
    assert [a.first_step for a in alerts if a.finding.kind == AnomalyKind.LOSS_SPIKE] == [200]
    assert first(alerts, AnomalyKind.DIVERGENCE_PREDICTED) is None


def test_loss_spike_precedes_the_nan_of_a_high_lr_run(default_suite: DiagnosticSuite) -> None:
    r = run("diverge_momentum")
    nan_step = r.first_nonfinite_step
    assert nan_step is not None and nan_step > 100
    alerts = feed(r.events, default_suite)
    spike = first(alerts, AnomalyKind.LOSS_SPIKE)
    assert spike is not None and spike.first_step < nan_step - 10, show(alerts)


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize(
    "name, min_lead",
    [("diverge_linear", 20), ("diverge_tanh", 10), ("diverge_momentum", 10), ("diverge_immediately", 8)],
)
def test_divergence_is_predicted_before_the_loss_becomes_nonfinite(name: str, min_lead: int, default_suite) -> None:
    r = run(name)
    nan_step = r.first_nonfinite_step
    assert nan_step is not None
    alerts = feed(r.events, default_suite)
    pred = first(alerts, AnomalyKind.DIVERGENCE_PREDICTED)
    assert pred is not None, show(alerts)
    assert pred.first_step <= nan_step - min_lead
    critical = [a for a in alerts if a.finding.kind == AnomalyKind.NONFINITE and a.finding.severity.name == "CRITICAL"]
    nonfinite = min(critical, key=lambda a: a.first_step) if critical else None
    # The first series to turn non-finite names the run's one incident: a loss (val/loss may do so a step
    # before loss), or the gradient norm where it overflows first (CPUs with other vector units than the
    # last CI machine's round diverge_momentum that way: +Inf 7 steps before the loss's NaN).
    assert nonfinite is not None and pred.first_step < nonfinite.first_step <= nan_step
    assert "loss" in nonfinite.finding.metric or nonfinite.finding.metric == "grad_norm"
    assert len({a.incident_id for a in critical}) == 1
    # A rate too high from the start is warned at the loss's first value up (start_blowup); the trend, after.
    # (diverge_momentum's momentum overshoot doubles its loss at its 6th value too: 0.50 -> 1.07 at lr 0.2.)
    expected = {"diverge_immediately": "start_blowup", "diverge_momentum": "start_blowup"}.get(name, "divergence")
    assert pred.finding.detector == expected, show(alerts)
    trend = first([a for a in alerts if a.finding.detector == "divergence"], AnomalyKind.DIVERGENCE_PREDICTED)
    assert trend is not None and trend.first_step <= nan_step - min_lead
    text = trend.finding.explanation
    assert (
        text.startswith("loss rose ")
        and "above its minimum over the last" in text
        and text.endswith("divergence likely")
    )
    loss_at = dict(r.series("loss"))[pred.first_step]
    assert math.isfinite(loss_at)


def test_divergence_explains_with_numbers() -> None:
    alerts = feed(run("diverge_linear").events, DiagnosticSuite(SuiteConfig(enabled=["divergence"])))
    (alert,) = alerts
    f = alert.finding
    assert f.severity.name == "CRITICAL" and f.related == ("grad_norm",)  # loss and gradients both climb
    assert "log-slope" in f.explanation and "R²" in f.explanation and f.score >= 2.0


def test_divergence_stays_quiet_on_restarts_warmup_and_small_batches() -> None:
    suite = DiagnosticSuite(SuiteConfig(enabled=["divergence"]))
    for name in ("adam_bs16", "adam_bs16_warmup_cosine", "adam_bs16_lr_restarts"):
        assert feed(run(name).events, suite) == [], name


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", ["diverge_linear", "diverge_tanh", "diverge_momentum"])
def test_exploding_gradients_fire_before_nan(name: str, default_suite: DiagnosticSuite) -> None:
    r = run(name)
    alerts = feed(r.events, default_suite)
    exploding = [a for a in alerts if a.finding.kind == AnomalyKind.EXPLODING_GRADIENT]
    assert exploding, show(alerts)
    assert min(a.first_step for a in exploding) < r.first_nonfinite_step - 5
    assert {a.finding.key for a in exploding} <= {"grad_norm"} | {f"grad_norm/fc{i}" for i in (1, 2, 3)}
    for a in exploding:  # one incident per metric, the layer named
        assert a.finding.layer == a.finding.key.partition("/")[2]


def test_exploding_gradient_spike_on_the_corrupted_batch(default_suite: DiagnosticSuite) -> None:
    alerts = feed(run("bad_batch_scaled").events, default_suite)
    spikes = [a for a in alerts if a.finding.kind == AnomalyKind.EXPLODING_GRADIENT]
    assert {a.finding.key for a in spikes} == {"grad_norm", "grad_norm/fc1", "grad_norm/fc2", "grad_norm/fc3"}
    assert {a.first_step for a in spikes} == {200}
    assert all(a.finding.score >= 10 for a in spikes)


def test_a_gradient_norm_that_jumps_100000x_within_the_warm_up_is_a_spike(default_suite: DiagnosticSuite) -> None:
    """A sparse log (or an excerpt) can blow up within its first 20 values, before the norm's noise is known."""
    from runwatch.models.diagnostics.gradients import ExplodingGradientDiagnostic

    # mmdetection issue 11708: two logged lines, 3.46 then 31 million
    blowup = MetricBlock.from_rows([50, 100], [0.0, 0.0], [{"grad_norm": 3.4572}, {"grad_norm": 31101415.6}])
    (f,) = ExplodingGradientDiagnostic().observe_block(blowup)
    assert f.step == 100 and f.severity is Severity.CRITICAL and f.score == pytest.approx(8.996e6, rel=1e-3)
    assert "within its first 20 values" in f.explanation
    # a healthy real Trainer run's noisy norm (1,378x its first values at its third log): not a spike
    noisy = [0.159, 0.102, 218.53, 0.109, 0.608, 0.323, 84.151, 1.547, 0.233, 0.273, 0.601, 0.913, 0.269, 101.648]
    rows = [{"grad_norm": v} for v in noisy]
    assert ExplodingGradientDiagnostic().observe_block(MetricBlock.from_rows(list(range(14)), [0.0] * 14, rows)) == []
    alerts = feed([(s, 0.0, {"loss": 1.5, "grad_norm": g}) for s, g in ((50, 3.4572), (100, 31101415.6))], default_suite)
    assert AnomalyKind.EXPLODING_GRADIENT in {a.finding.kind for a in alerts}, show(alerts)


def test_a_loss_that_jumps_10000x_within_the_warm_up_is_a_spike(default_suite: DiagnosticSuite) -> None:
    """The loss spike rule waits 50 values for its noise level; a blow-up within them is flagged when it is extreme."""
    from runwatch.models.diagnostics.loss_spike import LossSpikeDiagnostic

    # mmdetection issue 1742: 0.62, 1.01, then 225,193 on the third line
    rows = [{"loss": v} for v in (0.6186, 1.0083, 225192.6129)]
    (f,) = LossSpikeDiagnostic().observe_block(MetricBlock.from_rows([3150, 3200, 3250], [0.0] * 3, rows))
    assert f.step == 3250 and f.severity is Severity.CRITICAL and f.score > 1e5
    assert "within its first values" in f.explanation
    # a noisy early loss (a PINN's, 852x its largest earlier value at worst on this machine's real logs): nothing
    noisy = [{"loss": v} for v in (1e-3, 0.2, 5e-4, 0.3, 1e-4, 0.85)]
    assert LossSpikeDiagnostic().observe_block(MetricBlock.from_rows(list(range(6)), [0.0] * 6, noisy)) == []
    alerts = feed([(s, 0.0, {"loss": v}) for s, v in ((3150, 0.6186), (3200, 1.0083), (3250, 225192.6))], default_suite)
    assert AnomalyKind.LOSS_SPIKE in {a.finding.kind for a in alerts}, show(alerts)


def test_vanishing_gradients_in_a_deep_sigmoid_net(default_suite: DiagnosticSuite) -> None:
    r = run("vanishing")
    norms = r.events[0][2]
    assert norms["grad_norm/fc1"] < 1e-4 * norms["grad_norm/fc9"]  # the fault is real
    alerts = feed(r.events, default_suite)
    vanishing = {a.finding.key: a for a in alerts if a.finding.kind == AnomalyKind.VANISHING_GRADIENT}
    assert "grad_norm/fc1" in vanishing, show(alerts)
    f1 = vanishing["grad_norm/fc1"]
    assert f1.finding.layer == "fc1" and f1.first_step <= 15
    assert "fc9" in f1.finding.explanation and f1.finding.score > 1e4
    assert "grad_norm/fc9" not in vanishing and "grad_norm/fc8" not in vanishing


def test_update_ratio_flags_a_layer_left_out_of_the_optimizer(default_suite: DiagnosticSuite) -> None:
    r = run("frozen_fc1")
    assert {m["update_ratio/fc1"] for _, _, m in r.events} == {0.0}
    alerts = feed(r.events, default_suite)
    assert [(a.finding.kind, a.finding.key) for a in alerts] == [(AnomalyKind.UPDATE_RATIO, "update_ratio/fc1")], show(
        alerts
    )
    a = alerts[0]
    assert a.finding.layer == "fc1" and 10 < a.first_step <= 15  # after the 10-step warm-up + patience 3
    assert "not being updated" in a.finding.explanation


def test_update_ratio_flags_updates_larger_than_the_weights(default_suite: DiagnosticSuite) -> None:
    r = run("diverge_immediately")
    alerts = feed(r.events, default_suite)
    large = [a for a in alerts if a.finding.kind == AnomalyKind.UPDATE_RATIO and "> 10" in a.finding.explanation]
    assert large, show(alerts)
    assert min(a.first_step for a in large) < r.first_nonfinite_step


def test_update_ratio_accepts_a_learning_rate_annealed_to_zero() -> None:
    r = run("lr_to_zero")
    assert [m["update_ratio/fc2"] for _, _, m in r.events[-20:]] == [0.0] * 20
    suite = DiagnosticSuite(SuiteConfig(enabled=["update_ratio"]))
    assert feed(r.events, suite) == []  # the logged lr explains the zero updates
    without_lr = [(s, w, {k: v for k, v in m.items() if k != "lr"}) for s, w, m in r.events]
    alerts = feed(without_lr, suite)
    assert {a.finding.layer for a in alerts} == {"fc1", "fc2", "fc3"}
    assert {a.first_step for a in alerts} == {102}


# --------------------------------------------------------------- activations


def test_dead_relu_units(default_suite: DiagnosticSuite) -> None:
    alerts = feed(run("dead_relu").events, default_suite)
    dead = {a.finding.layer: a for a in alerts if a.finding.kind == AnomalyKind.DEAD_UNITS}
    assert set(dead) == {"fc1", "fc2"}, show(alerts)
    for a in dead.values():
        assert a.first_step == 10 and a.finding.score == 1.0 and a.finding.severity.name == "ERROR"


def test_saturated_tanh_units(default_suite: DiagnosticSuite) -> None:
    r = run("saturated_tanh")
    alerts = feed(r.events, default_suite)
    sat = {a.finding.layer: a for a in alerts if a.finding.kind == AnomalyKind.SATURATION}
    assert set(sat) == {"fc1", "fc2"}, show(alerts)
    for layer, a in sat.items():
        assert a.first_step == 10 and a.finding.key == f"act/sat_frac/{layer}" and 0.5 < a.finding.score < 0.9
    assert first(feed(run("adam_bs32_tanh").events, default_suite), AnomalyKind.SATURATION) is None


# ---------------------------------------------------- plateau and overfitting


def test_plateau_with_a_tiny_learning_rate(default_suite: DiagnosticSuite) -> None:
    r = run("tiny_lr")
    losses = [m["loss"] for _, _, m in r.events]
    assert abs(losses[-1] - losses[0]) < 0.05  # the loss really does not move
    alerts = feed(r.events, default_suite)
    assert [a.finding.kind for a in alerts] == [AnomalyKind.PLATEAU], show(alerts)
    assert 199 <= alerts[0].first_step <= 210  # not before the 200-step window is full
    assert "improved by at most" in alerts[0].finding.explanation


@pytest.mark.parametrize("name", ["diverge_slow", "demo_diverging"])
def test_plateau_stays_quiet_while_the_loss_diverges(name: str, default_suite: DiagnosticSuite) -> None:
    # A rising loss is not a plateau: the window's fitted change is a rise (+19 % ... +550 %
    # per window here), which the divergence diagnostic reports. Without the max_rise
    # guard plateau used to read it as "improved by at most 0.0%" and advise raising
    # the learning rate.
    if name == "demo_diverging":  # the demo's diverging run: SGD + momentum, lr warmed up past the limit
        from runwatch.service.demo_training import diverging

        events: list[Event] = []
        diverging(lambda step, metrics: events.append((step, time.time(), dict(metrics))), seed=0)
    else:
        events = run(name).events
    nan_step = next(s for s, _, m in events if not math.isfinite(m["loss"]))
    assert nan_step > 200  # the 200-step plateau window fills while the loss climbs
    alerts = feed(events, default_suite)
    pred = first(alerts, AnomalyKind.DIVERGENCE_PREDICTED)
    assert pred is not None and pred.first_step < nan_step, show(alerts)
    assert first(alerts, AnomalyKind.PLATEAU) is None, show(alerts)
    # The max_rise guard alone keeps it quiet (these runs' learning rate rises throughout, so the warm-up gate
    # would too: it is switched off here); without either the same run reads as a plateau.
    rise_only = DiagnosticSuite(SuiteConfig(enabled=["plateau"], settings={"plateau": {"lr_warmup": False}}))
    assert first(feed(events, rise_only), AnomalyKind.PLATEAU) is None
    unguarded = DiagnosticSuite(
        SuiteConfig(enabled=["plateau"], settings={"plateau": {"max_rise": 1e9, "lr_warmup": False}})
    )
    stuck = first(feed(events, unguarded), AnomalyKind.PLATEAU)
    assert stuck is not None and "improved by at most 0.0%" in stuck.finding.explanation
    assert stuck.first_step > 200


def test_plateau_never_fires_during_warmup() -> None:
    suite = DiagnosticSuite(
        SuiteConfig(enabled=["plateau"], settings={"plateau": {"patience": 20, "warmup_steps": 150}})
    )
    alerts = feed(run("tiny_lr").events, suite)
    assert alerts and min(a.first_step for a in alerts) >= 150


def test_plateau_ignores_a_converged_loss() -> None:
    r = run("overfit")  # train loss reaches ~1e-4
    assert r.events[-1][2]["loss"] < 1e-3
    suite = DiagnosticSuite(SuiteConfig(enabled=["plateau"], settings={"plateau": {"patience": 30, "warmup_steps": 0}}))
    assert feed(r.events, suite) == []


def test_a_plateau_after_most_of_the_progress_is_info_one_that_never_got_going_a_warning() -> None:
    """Flat at 35 % of its start: a run that learned what it could; flat at 97 %: a run that never started."""
    from runwatch.models.diagnostics.plateau import PlateauConfig, PlateauDiagnostic

    rng = random.Random(0)

    def first(level: float, **config):
        d = PlateauDiagnostic(PlateauConfig(**config))
        rows = [{"loss": 2.3 * max(level, 0.985 ** s) + rng.gauss(0.0, 0.002)} for s in range(1200)]
        found = d.observe_block(MetricBlock.from_rows(list(range(1200)), [0.0] * 1200, rows))
        return found[0]

    converged, stuck = first(0.35), first(0.97)
    assert converged.severity == Severity.INFO and "may simply have converged" in converged.explanation
    assert stuck.severity == Severity.WARNING and "converged" not in stuck.explanation
    assert first(0.35, progress_info_below=0.0).severity == Severity.WARNING  # 0: every plateau a warning


def _epochs(epoch_steps: int, drop: float, last_step: int = 3000, gap: int = 10, seed: int = 0) -> list[Event]:
    """A multi-epoch fine-tune logged every ``gap`` steps: flat within an epoch, ``drop`` lower after each."""
    rng = random.Random(seed)
    return [(s, 1000.0 + s, {"loss": 9.8 * (1 - drop) ** (s // epoch_steps) + rng.gauss(0.0, 0.03)})
            for s in range(0, last_step + 1, gap)]


def test_a_loss_coming_down_in_steps_is_not_a_stuck_run() -> None:
    """Flat for an epoch, 5 % lower after each (a real HF fine-tune's shape): its plateaus are INFO.

    The same flat windows without the drops, or with drops too small to count, stay WARNINGs.
    """
    from runwatch.models.diagnostics.plateau import PlateauConfig

    def plateaus(events, **config):
        suite = DiagnosticSuite(SuiteConfig(enabled=["plateau"], settings={"plateau": PlateauConfig(**config).to_dict()}))
        return [a.finding for a in feed(events, suite) if a.finding.kind is AnomalyKind.PLATEAU]

    stairs = plateaus(_epochs(250, 0.05))  # 12 epochs: it ends at 54 % of its start, not "converged"
    # Before three windows of history exist the guard cannot judge: the first epoch's flat loss is judged as before.
    judged = [f for f in stairs if f.step >= 3 * 200 + 100]
    assert len(judged) >= 3 and {f.severity for f in judged} == {Severity.INFO}, [(f.step, f.explanation) for f in stairs]
    assert all("coming down in steps" in f.explanation for f in judged)
    stuck = plateaus(_epochs(10**6, 0.0))
    assert stuck and {f.severity for f in stuck} == {Severity.WARNING}
    assert {f.severity for f in plateaus(_epochs(250, 0.01))} == {Severity.WARNING}  # 1 % a step: still stuck
    assert Severity.WARNING in {f.severity for f in plateaus(_epochs(250, 0.05), stair_fall=0.0) if f.step >= 700}


@pytest.mark.parametrize("size", [1, 7, 64, 500])
def test_the_staircase_guard_does_not_depend_on_the_batching(size: int) -> None:
    events = _epochs(250, 0.03, last_step=4000)
    suite = DiagnosticSuite(SuiteConfig(enabled=["plateau"]))
    expected = [(a.finding.step, a.finding.severity, a.finding.explanation) for a in feed(events, suite)]
    assert {sev for _, sev, _ in expected} == {Severity.INFO, Severity.WARNING}  # both sides of the bar occur
    monitor, got = suite.monitor("run"), []
    for i in range(0, len(events), size):
        if i == 96:  # and survives a checkpoint
            restored = suite.monitor("run")
            restored.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
            monitor = restored
        got.extend(monitor.observe_block(MetricBlock.from_rows(*zip(*events[i : i + size]))))
    assert [(a.finding.step, a.finding.severity, a.finding.explanation) for a in got] == expected


def _logged_every(gap: int, losses, last_step: int = 900, seed: int = 0) -> list[Event]:
    """A loss logged every ``gap`` steps (HF Trainer ``logging_steps``, Lightning ``log_every_n_steps``)."""
    rng = random.Random(seed)
    return [(s, 1000.0 + 0.1 * s, {"loss": losses(s) + rng.gauss(0.0, 0.005)}) for s in range(0, last_step + 1, gap)]


PLATEAU_ONLY = SuiteConfig(enabled=["plateau"])


def test_plateau_on_a_sparsely_logged_flat_loss(default_suite: DiagnosticSuite) -> None:
    # 37 points over 900 steps: a 200-point window never filled and the stuck run went
    # unreported. The window now covers max(min_points=10, 200 steps / 25) = 10 points.
    events = _logged_every(25, lambda s: 2.3)
    alerts = feed(events, DiagnosticSuite(PLATEAU_ONLY))
    assert alerts and {a.finding.kind for a in alerts} == {AnomalyKind.PLATEAU}, show(alerts)
    stuck = first(alerts, AnomalyKind.PLATEAU)
    assert stuck.first_step == 225  # the 10th point: 9 gaps of 25 steps, past the 100-step warm-up
    assert "over the last 225 steps" in stuck.finding.explanation
    assert first(feed(events, default_suite), AnomalyKind.PLATEAU) is not None
    # Sized once, from the median gap of the first 10 values, and checked on every value.
    d = diagnostic_class("plateau")()
    d.observe_block(MetricBlock.from_rows(*zip(*events)))
    assert d._states["loss"][0][13:15].tolist() == [10.0, 1.0]


@pytest.mark.parametrize(("gap", "points", "span"), [(5, 40, 195), (50, 10, 450), (100, 10, 900)])
def test_plateau_window_covers_about_patience_steps(gap: int, points: int, span: int) -> None:
    d = diagnostic_class("plateau")()
    events = _logged_every(gap, lambda s: 2.3, last_step=40 * gap)
    found = d.observe_block(MetricBlock.from_rows(*zip(*events)))
    assert int(d._states["loss"][0][13]) == points
    assert found and f"over the last {span} steps" in found[0].explanation
    assert found[0].step == span  # as soon as the window is full (all spans pass the 100-step warm-up)


def test_plateau_stays_quiet_on_a_sparsely_logged_improving_loss() -> None:
    events = _logged_every(25, lambda s: 2.3 * 0.99 ** (s / 25))  # -1 % per 25 steps
    assert feed(events, DiagnosticSuite(PLATEAU_ONLY)) == []


def test_plateau_on_sparse_logs_blocks_and_events_agree() -> None:
    events = _logged_every(25, lambda s: 2.3 if s >= 300 else 2.3 * 0.99 ** ((s - 300) / 25), last_step=2000)
    suite = DiagnosticSuite(PLATEAU_ONLY)
    expected = [(a.finding.step, a.finding.score, a.state) for a in feed(events, suite)]
    assert expected
    for size in (1, 3, 7, 64):
        monitor = suite.monitor("run")
        got = []
        for i in range(0, len(events), size):
            got.extend(monitor.observe_block(MetricBlock.from_rows(*zip(*events[i : i + size]))))
        assert [(a.finding.step, a.finding.score, a.state) for a in got] == expected, size


def test_plateau_on_dense_logs_is_unchanged(default_suite: DiagnosticSuite) -> None:
    # Logged every step the window is still 200 points checked every 10: the same findings
    # as before the window was sized in steps (first step measured on the previous code).
    alerts = feed(run("tiny_lr").events, DiagnosticSuite(PLATEAU_ONLY))
    assert first(alerts, AnomalyKind.PLATEAU).first_step == 199
    assert "over the last 199 steps" in alerts[0].finding.explanation
    events = _logged_every(1, lambda s: 2.3)
    d = diagnostic_class("plateau")()
    found = d.observe_block(MetricBlock.from_rows(*zip(*events)))
    assert d._states["loss"][0][13:15].tolist() == [200.0, 10.0]
    assert [f.step for f in found] == list(range(199, 901, 10))  # previous code: the same 71 steps


def test_plateau_restores_a_snapshot_from_before_min_points() -> None:
    # Snapshots taken before the window was sized in steps have no min_points in their config
    # and 13 state scalars; they load, and the run continues with its 200-point window.
    events = _logged_every(1, lambda s: 2.3)
    blocks = [MetricBlock.from_rows(*zip(*events[i : i + 64])) for i in range(0, len(events), 64)]
    whole = diagnostic_class("plateau")()
    expected = [(f.step, f.score) for b in blocks for f in whole.observe_block(b)]
    before = diagnostic_class("plateau")()
    got = [(f.step, f.score) for b in blocks[:2] for f in before.observe_block(b)]
    state, params = before._states["loss"]
    before._states["loss"] = (np.delete(state, [13, 14]), (params[0], *params[3:-1]))  # the old layout
    old = before.state_dict()
    del old["config"]["min_points"], old["config"]["late_rate"]
    after = diagnostic_class("plateau")()
    assert after.load_state_dict(json.loads(json.dumps(old)))
    got += [(f.step, f.score) for b in blocks[2:] for f in after.observe_block(b)]
    assert got == expected
    other = diagnostic_class("plateau")(diagnostic_class("plateau").config_class(min_points=20))
    assert not other.load_state_dict(json.loads(json.dumps(old)))  # an old snapshot means min_points 10


def test_overfitting_on_a_tiny_training_set(default_suite: DiagnosticSuite) -> None:
    r = run("overfit")
    val = r.series("val/loss")
    best_step, best = min(val, key=lambda p: p[1])
    alerts = feed(r.events, default_suite)
    over = first(alerts, AnomalyKind.OVERFITTING)
    assert over is not None, show(alerts)
    assert best_step < over.first_step <= best_step + 40
    value_then = dict(val)[over.first_step]
    assert value_then >= 1.1 * best and over.finding.score >= 1.1
    assert over.finding.related == ("loss",) and "while loss fell" in over.finding.explanation


# ----------------------------------------------------------------- stalled


def test_stalled_run_after_real_events(default_suite: DiagnosticSuite) -> None:
    monitor = default_suite.monitor("stall")
    assert monitor.idle(time.time()) == []  # nothing received yet: never stalled
    events = run("slow_data").events
    for step, wall, metrics in events:
        monitor.observe(step, wall, metrics)
    last = events[-1][1]
    assert monitor.idle(last + 10.0) == []
    assert monitor.idle(last + 899.0) == []
    (alert,) = monitor.idle(last + 901.0)
    assert alert.finding.kind == AnomalyKind.STALLED and alert.finding.step == events[-1][0]
    assert "no telemetry for 901 s" in alert.finding.explanation
    assert monitor.idle(last + 1000.0) == []  # same incident, not worse
    (worse,) = monitor.idle(last + 3700.0)  # > 4x the timeout escalates
    assert worse.finding.severity.name == "ERROR" and worse.incident_id == alert.incident_id


def test_stalled_timeout_grows_with_a_slow_event_rate() -> None:
    suite = DiagnosticSuite(SuiteConfig(enabled=["stalled"]))
    monitor = suite.monitor("slow")
    t0 = time.time()
    for step, (_, _, metrics) in enumerate(run("adam_bs128").events[:20]):
        monitor.observe(step, t0 + 150.0 * step, metrics)  # one event every 150 s
    last = t0 + 150.0 * 19
    assert monitor.idle(last + 901.0) == []  # 10 x 150 s = 1500 s
    (alert,) = monitor.idle(last + 1501.0)
    assert "timeout 1500 s" in alert.finding.explanation


def test_stalled_waits_longer_before_a_run_has_shown_its_rhythm() -> None:
    """Sparse logging (every 500 steps) looks like a stall until a few gaps are known."""
    monitor = DiagnosticSuite(SuiteConfig(enabled=["stalled"])).monitor("sparse")
    t0 = time.time()
    monitor.observe(0, t0, {"loss": 2.0})
    assert monitor.idle(t0 + 1000.0) == []  # 4 x 900 s before the first gap is known
    (alert,) = monitor.idle(t0 + 3601.0)
    assert "timeout 3600 s" in alert.finding.explanation
    later = DiagnosticSuite(SuiteConfig(enabled=["stalled"])).monitor("known")
    for i in range(4):
        later.observe(i, t0 + 10.0 * i, {"loss": 2.0})
    assert later.idle(t0 + 30.0 + 901.0)  # rhythm known: the plain timeout


# ---------------------------------------------------------------- resources


def test_memory_growth_of_a_leaking_loop(default_suite: DiagnosticSuite) -> None:
    r = run("leak")
    mem = [m["cpu_mem"] for _, _, m in r.events]
    assert mem[-1] - mem[20] > 50  # MiB: the leak is real
    alerts = feed(r.events, default_suite)
    leak = first(alerts, AnomalyKind.MEMORY_GROWTH)
    assert leak is not None, show(alerts)
    assert leak.finding.metric == "cpu_mem" and leak.first_step == 119  # first full window
    assert leak.finding.score > 2  # > 10 % growth in 100 steps
    assert [a.finding.kind for a in alerts] == [AnomalyKind.MEMORY_GROWTH]


def test_data_bottleneck_with_a_slow_iterator(default_suite: DiagnosticSuite) -> None:
    r = run("slow_data")
    data = [m["data_time"] for _, _, m in r.events]
    assert min(data) >= 0.008  # above DataBottleneckConfig.min_data_time (5 ms)
    alerts = feed(r.events, default_suite)
    assert [a.finding.kind for a in alerts] == [AnomalyKind.DATA_BOTTLENECK], show(alerts)
    assert alerts[0].first_step == 21 and alerts[0].finding.score > 1.0  # share > 50 %


# --------------------------------------------------------------- deployment


def test_latency_burst_of_huge_batches(default_suite: DiagnosticSuite) -> None:
    events = requests("burst")
    lat = [m["latency_ms"] for _, _, m in events]
    baseline = sorted(lat[:400])[200]
    assert min(lat[400:408]) > 10 * baseline + 5  # the slowdown is real
    alerts = feed(events, default_suite, "serving")
    # one incident; the latencies are measured, so on a busy machine it may be revised as the burst goes on
    assert {a.finding.kind for a in alerts} == {AnomalyKind.LATENCY}, show(alerts)
    assert len({a.incident_id for a in alerts}) == 1, show(alerts)
    assert alerts[0].first_step == 402  # third slow request in a row
    assert alerts[0].finding.score > 6


def test_latency_that_creeps_up_is_flagged_as_a_drift(default_suite: DiagnosticSuite) -> None:
    events = requests("leak")
    lat = [m["latency_ms"] for _, _, m in events]
    early, late = sorted(lat[:200])[100], sorted(lat[-200:])[100]
    assert late > 3 * early and late - early > 1.0  # the slowdown is real
    alerts = feed(events, default_suite, "serving")
    drift = [a for a in alerts if a.finding.key == "drift:latency_ms"]
    assert drift and drift[0].finding.kind == AnomalyKind.LATENCY, show(alerts)
    assert 250 <= drift[0].first_step < 1000
    assert "best sustained level" in drift[0].finding.explanation


def test_error_rate_with_malformed_requests(default_suite: DiagnosticSuite) -> None:
    events = requests("malformed")
    rates = [m["error_rate"] for _, _, m in events if "error_rate" in m]
    assert rates[:8] == [0.0] * 8 and min(rates[8:]) > 0.1
    alerts = feed(events, default_suite, "serving")
    assert [a.finding.kind for a in alerts] == [AnomalyKind.ERROR_RATE], show(alerts)
    # The first window with errors ends at 449; the finding needs a second one (ErrorRateConfig.patience).
    assert alerts[0].first_step == 499 and alerts[0].finding.severity.name == "CRITICAL"


def test_error_rate_at_low_traffic_needs_a_second_window() -> None:
    """3 requests a window, 0.3 % of them failing: one failed request is a window at 33 %, and it is noise."""
    from runwatch.models.diagnostics.deployment import ErrorRateConfig, ErrorRateDiagnostic

    rng = np.random.default_rng(0)
    requests = np.maximum(1, rng.poisson(3, 3 * 1440))
    rates = rng.binomial(requests, 0.003) / requests
    assert (rates > 0.2).sum() >= 10  # single windows far above any baseline

    def findings(values, **config):
        d = ErrorRateDiagnostic(ErrorRateConfig(**config))
        rows = [{"error_rate": float(v)} for v in values]
        return d.observe_block(MetricBlock.from_rows(list(range(len(rows))), [60.0 * i for i in range(len(rows))], rows))

    assert findings(rates) == []
    assert len(findings(rates, patience=1)) >= 5  # what one window raised before
    outage = np.concatenate([rates[:600], np.full(5, 0.6), rates[605:700]])
    found = findings(outage)
    assert [f.step for f in found] == [601, 602, 603, 604] and found[0].severity == Severity.CRITICAL


def test_a_sparse_loss_that_jumps_and_stays_up_has_diverged() -> None:
    """A loss logged every 50 steps that jumps 20x and never comes back fits no steady climb; it still diverged."""
    from runwatch.models.diagnostics.divergence import DivergenceConfig, DivergenceDiagnostic

    def findings(values, **config):
        steps = [50 * (i + 1) for i in range(len(values))]
        d = DivergenceDiagnostic(DivergenceConfig(**config))
        return d.observe_block(MetricBlock.from_rows(steps, [float(s) for s in steps], [{"loss": v} for v in values]))

    jumped = [0.22, 0.21, 0.23, 0.20, 0.21, 0.19, 4.3, 5.3, 5.33, 5.35, 5.34, 5.33, 5.32, 5.34]
    (first, *_) = findings(jumped)
    assert first.kind == AnomalyKind.DIVERGENCE_PREDICTED and first.severity == Severity.ERROR
    assert "back above its initial level" in first.explanation
    assert findings(jumped, shift_ratio=0.0) == []  # the steady-climb fit alone misses it
    # a converged loss's noise triples its minimum but stays far below where the run started
    converged = [2.3, 1.2, 0.6, 0.3, 0.1, 0.05, 0.02, 0.01, 0.012, 0.05, 0.06, 0.055, 0.05, 0.06]
    assert findings(converged) == []


@pytest.mark.parametrize("block_size", [1, 3, 50])
def test_a_loss_that_blows_up_within_the_warm_up_is_divergence_three_values_later(block_size: int) -> None:
    """A learning rate far too high from step 0: the loss leaves its start for good in one step.

    The shape of an Adam run at lr 0.76 (loss 0.69 -> thousands, back near its start only 13 steps later)
    and of an SGD run whose loss is Inf by step 5. The warm-up's initial level is capped at
    ``shift_ratio`` x the start, so the blow-up cannot become the level it is measured against.
    """
    from runwatch.models.diagnostics.divergence import DivergenceDiagnostic

    def first_step(values):
        d = DivergenceDiagnostic()
        rows = [{"loss": v} for v in values]
        found = []
        for i in range(0, len(rows), block_size):
            chunk = rows[i : i + block_size]
            found += d.observe_block(MetricBlock.from_rows(list(range(i, i + len(chunk))), [0.0] * len(chunk), chunk))
        return found[0].step if found else None

    adam = [0.69, 2441.4, 36094.5, 747738.9, 42069.4, 3041.8, 204653.7, 83702.2, 35555.4, 1383.9, 32144.8, 4897.9,
            914.7, 1.62] + [0.7] * 40
    sgd = [1.20, 10.28, 40.43, 34366.7, 6.65e11, 1.7e35, math.inf]
    assert first_step(adam) == 3 and first_step(sgd) == 3
    # healthy starts: a first step that doubles the loss and comes back, a warm-up that barely moves it
    assert first_step([1.0, 2.1, 1.4, 1.0, 0.9, 0.85] + [0.8 * 0.99**i for i in range(60)]) is None
    assert first_step([9.7, 9.8, 9.9, 9.7, 9.6] + [9.5 * 0.995**i for i in range(60)]) is None


@pytest.mark.parametrize("block_size", [1, 2, 7])
def test_a_non_finite_gradient_is_info_until_it_persists_whatever_the_batching(block_size: int) -> None:
    from runwatch.models.diagnostics.nonfinite import NonFiniteDiagnostic

    nan = math.nan
    # one skipped fp16 step, finite again (the streak resets), then three non-finite reports in a row
    grad = [1.0, nan, 1.0, 1.1, nan, math.inf, nan, 1.0, 0.9]
    rows = [{"grad_norm": g, "loss": 1.0} for g in grad]
    d = NonFiniteDiagnostic()
    found = []
    for i in range(0, len(rows), block_size):
        chunk = rows[i : i + block_size]
        found += d.observe_block(MetricBlock.from_rows(list(range(i, i + len(chunk))), [0.0] * len(chunk), chunk))
    by_step = {f.step: f for f in found}
    assert by_step[1].severity == Severity.INFO and by_step[4].severity == Severity.INFO
    assert by_step[6].severity == Severity.CRITICAL and "3 reports in a row" in by_step[6].explanation
    assert d._streaks["grad_norm"] == 0  # finite again at the end
    assert not any(f.metric == "loss" for f in found)


def test_after_a_run_fails_its_consequences_are_info_naming_the_failure() -> None:
    from runwatch.models.fusion import FindingFusion, FusionConfig

    def f(kind, severity, step):
        return Finding(AnomalyKind[kind], Severity[severity], 1.0, step, "loss", kind.lower())

    fusion = FindingFusion(FusionConfig())
    blown = f("DIVERGENCE_PREDICTED", "CRITICAL", 100)
    later = [f("VANISHING_GRADIENT", "ERROR", 160), f("UPDATE_RATIO", "WARNING", 250), f("SATURATION", "WARNING", 700),
             f("LOG_PATTERN", "ERROR", 200)]
    fusion.apply([blown, *later], learned_normal=lambda step: False)
    assert blown.severity == Severity.CRITICAL
    assert [x.severity.name for x in later] == ["INFO", "INFO", "WARNING", "ERROR"]  # 600 steps on: a new problem
    assert later[0].explanation.endswith("[INFO: after the run failed (DIVERGENCE_PREDICTED at step 100)]")
    restored = FindingFusion(FusionConfig())
    restored.load_state_dict(fusion.state_dict())
    again = f("RUN_OUTLIER", "WARNING", 300)
    restored.apply([again], learned_normal=lambda step: False)
    assert again.severity == Severity.INFO
    old = FindingFusion(FusionConfig())
    old.load_state_dict([0, -1])  # a checkpoint from before the failure latch
    assert old.failed_step == -1
    prediction = f("DIVERGENCE_PREDICTED", "ERROR", 10)  # a forecast is not a failure
    quiet = FindingFusion(FusionConfig())
    after = f("PLATEAU", "WARNING", 20)  # not a symptom kind: only the failure latch could demote it
    quiet.apply([prediction, after], learned_normal=lambda step: False)
    assert after.severity == Severity.WARNING


def test_the_other_layers_of_a_root_incident_are_part_of_it() -> None:
    from runwatch.models.fusion import FindingFusion, FusionConfig

    def surge(metric: str, step: int) -> Finding:
        return Finding(AnomalyKind.EXPLODING_GRADIENT, Severity.WARNING, 3.0, step, metric, f"{metric} surged")

    fusion = FindingFusion(FusionConfig())
    layers = [surge(m, 404) for m in ("grad_norm", "grad_norm/conv1", "grad_norm/head")]
    same_layer_later, much_later = surge("grad_norm", 405), surge("grad_norm/conv1", 600)
    fusion.apply([*layers, same_layer_later, much_later], learned_normal=lambda step: False)
    assert [f.severity.name for f in layers] == ["WARNING", "INFO", "INFO"]
    assert layers[1].explanation.endswith("[INFO: part of the EXPLODING_GRADIENT incident at step 404 (grad_norm)]")
    assert same_layer_later.severity == Severity.WARNING  # the root incident itself goes on
    assert much_later.severity == Severity.WARNING  # past group_steps: a new root
    old = FindingFusion(FusionConfig())
    old.load_state_dict([int(AnomalyKind.EXPLODING_GRADIENT), 404, 0, -1])  # from before the root's key was kept
    other = surge("grad_norm/conv1", 410)
    old.apply([other], learned_normal=lambda step: False)
    assert other.severity == Severity.WARNING


def test_an_alert_folded_under_an_incident_names_it_in_part_of() -> None:
    # A run whose gradients vanish in three layers at once: one incident, the other layers INFO and part of it.
    from runwatch.service.pipeline import to_anomaly

    monitor = DiagnosticSuite(SuiteConfig()).monitor("vanishing")
    alerts = []
    for step in range(300):
        row = {"loss": 2.3 + 0.02 * math.sin(step), "grad_norm/head": 1.0 + 0.01 * (step % 7)}
        row.update({f"grad_norm/l{i}": (1e-9 if step >= 100 else 0.5) * (1 + 0.01 * (step % 5)) for i in range(3)})
        alerts += monitor.observe(step, float(step), row)
    folded = [a for a in alerts if a.part_of]
    assert folded, show(alerts)
    ids = {a.incident_id: a for a in alerts}
    for a in folded:
        assert a.finding.severity == Severity.INFO and a.part_of in ids and a.part_of != a.incident_id
        root = ids[a.part_of]
        assert root.finding.severity >= Severity.WARNING and root.first_step <= a.first_step
        assert to_anomaly(a, "vanishing", "p", 0.0).part_of == a.part_of
    assert not [a for a in alerts if a.finding.severity >= Severity.WARNING and a.part_of]
    # A checkpoint from before the root's detector was kept folds nothing under a named incident.
    from runwatch.models.fusion import FindingFusion, FusionConfig

    old = FindingFusion(FusionConfig())
    old.load_state_dict([int(AnomalyKind.EXPLODING_GRADIENT), 404, 0, -1, "grad_norm"])
    later = Finding(AnomalyKind.EXPLODING_GRADIENT, Severity.WARNING, 3.0, 410, "grad_norm/l1", "surged")
    old.apply([later], learned_normal=lambda step: False)
    assert later.severity == Severity.INFO and later.folded_into == ()


def test_overfitting_pages_after_alert_patience_points_or_when_a_run_ends_overfit() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    def rows(n_val: int, best_at: int):
        out = []
        for step in range(n_val * 10):
            row = {"loss": 2.0 * 0.97 ** step}
            if step % 10 == 9:
                k = step // 10
                row["val/loss"] = 0.5 if k <= best_at else 0.5 * (1.3 + 0.05 * (k - best_at))
            out.append(row)
        return MetricBlock.from_rows(list(range(len(out))), [0.0] * len(out), out)

    long_run = OverfittingDiagnostic()
    found = long_run.observe_block(rows(16, 5))
    assert [f.severity.name for f in found][:3] == ["INFO", "INFO", "WARNING"]  # points 3, 4: INFO; 5: paged
    assert found[2].step == 109 and long_run.on_end() == []  # already paged: nothing more at the end

    short = OverfittingDiagnostic()
    found = short.observe_block(rows(9, 5))  # ends 3 points into the rise
    assert [f.severity.name for f in found] == ["INFO"]
    restored = OverfittingDiagnostic()
    restored.load_state_dict(json.loads(json.dumps(short.state_dict())))
    (end,) = restored.on_end()
    assert end.severity == Severity.WARNING and end.step == 89 and end.explanation.endswith("; the run ended so")

    recovered = OverfittingDiagnostic()
    block = rows(9, 5)
    recovered.observe_block(block)
    recovered.observe_block(MetricBlock.from_rows([99], [0.0], [{"loss": 0.01, "val/loss": 0.5}]))  # back at its best
    assert recovered.on_end() == []


def test_a_run_that_ends_two_evaluations_into_a_rise_ended_overfit() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    # Five per-epoch evaluations, the best at the third: two are left, fewer than patience.
    steps = [1400, 2800, 4200, 5600, 7000]
    train, val = [0.060, 0.035, 0.020, 0.009, 0.005], [0.055, 0.049, 0.045, 0.060, 0.066]
    block = MetricBlock.from_rows(steps, [0.0] * 5, [{"loss": t, "val/loss": v} for t, v in zip(train, val)])
    d = OverfittingDiagnostic()
    assert d.observe_block(block) == []  # nothing while it runs: two points could be noise
    (end,) = d.on_end()
    assert end.severity == Severity.WARNING and end.step == 7000 and "for 2 validation points" in end.explanation
    # Ending with a rise below alert_rise (here +11 %) is context, not an alert.
    small = [0.055, 0.049, 0.045, 0.050, 0.050]
    quiet = OverfittingDiagnostic()
    quiet.observe_block(MetricBlock.from_rows(steps, [0.0] * 5, [{"loss": t, "val/loss": v} for t, v in zip(train, small)]))
    assert [f.severity for f in quiet.on_end()] == [Severity.INFO]
    # A run still going, or whose evaluation came back to its best, is not reported.
    back = OverfittingDiagnostic()
    back.observe_block(block)
    back.observe_block(MetricBlock.from_rows([8400], [0.0], [{"loss": 0.004, "val/loss": 0.044}]))
    assert back.on_end() == []


def test_overfitting_restores_a_checkpoint_from_before_held_findings() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    d = OverfittingDiagnostic()
    d.observe_block(MetricBlock.from_rows([9, 19], [0.0, 0.0], [{"loss": 1.0, "val/loss": 0.5}, {"loss": 0.9, "val/loss": 0.4}]))
    old = json.loads(json.dumps(d.state_dict()))
    del old["state"]["_held"]
    restored = OverfittingDiagnostic()
    assert restored.load_state_dict(old) and restored._held == []
    assert restored._state.tolist() == d._state.tolist()


def test_overfitting_on_an_epoch_indexed_log_follows_its_training_loss() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    # Keras's CSVLogger: one row per epoch, the epoch as the step (a gap of 1), each value an epoch's mean. The
    # per-step weight alone (0.05) left the smoothed training loss 20 epochs behind, above the held-out loss, so
    # a held-out loss 30-60 % above its best for the last 8 epochs raised nothing.
    train = [1.8, 1.2, 0.9, 0.7, 0.55, 0.45, 0.38, 0.33, 0.29, 0.26, 0.23, 0.21, 0.19, 0.17, 0.15, 0.13, 0.12, 0.11]
    val = [1.3, 0.9, 0.7, 0.55, 0.45, 0.38, 0.33, 0.30, 0.29, 0.31, 0.38, 0.36, 0.41, 0.40, 0.44, 0.43, 0.46, 0.45]
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, val)]
    steps = list(range(len(rows)))
    found = OverfittingDiagnostic().observe_block(MetricBlock.from_rows(steps, [0.0] * len(steps), rows))
    assert found and min(f.step for f in found) <= 12 and max(f.severity for f in found) >= Severity.WARNING
    # a healthy epoch log whose held-out loss wobbles around its best is left alone
    val_ok = [1.3, 0.9, 0.7, 0.55, 0.45, 0.38, 0.33, 0.30, 0.29, 0.30, 0.28, 0.29, 0.285, 0.28, 0.29, 0.275, 0.28, 0.28]
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, val_ok)]
    assert OverfittingDiagnostic().observe_block(MetricBlock.from_rows(steps, [0.0] * len(steps), rows)) == []


def test_overfitting_on_a_log_written_every_750_steps_follows_its_training_loss() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingConfig, OverfittingDiagnostic

    # A 5-epoch fine-tune logged once per epoch (the HF Trainer's per-epoch strategy): each training loss is an
    # epoch's mean, the evaluation loss is best after the first epoch and then climbs to nearly 3x.
    steps = [750, 1500, 2250, 3000, 3750]
    train, val = [0.46, 0.25, 0.12, 0.045, 0.010], [0.35, 0.39, 0.60, 0.95, 0.99]
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, val)]
    block = MetricBlock.from_rows(steps, [float(s) for s in steps], rows)
    d = OverfittingDiagnostic()
    found = d.observe_block(block) + d.on_end()
    assert found and max(f.severity for f in found) >= Severity.WARNING
    assert found[-1].explanation.startswith("val/loss 0.99 is 183% above its best 0.35 (step 750) for 4 validation points")
    # Weighted per value instead (the old smoothing), the training loss had hardly moved: nothing before the
    # last two evaluations (which the end of the run then reports, end_patience).
    per_value = OverfittingDiagnostic(OverfittingConfig(max_weight=0.05))
    assert per_value.observe_block(block) == [] and [f.step for f in per_value.on_end()] == [3750]
    assert not OverfittingDiagnostic(OverfittingConfig(max_weight=0.05, end_patience=3)).observe_block(block)
    # A checkpoint from before the last training step was kept: the next value weighs alpha, nothing breaks.
    half = OverfittingDiagnostic()
    half.observe_block(MetricBlock.from_rows(steps[:2], [0.0, 0.0], rows[:2]))
    from runwatch.models.snapshot import encode

    old = json.loads(json.dumps(half.state_dict()))
    old["state"]["_state"] = encode(half._state[:8].copy())  # as the previous version wrote it
    restored = OverfittingDiagnostic()
    assert restored.load_state_dict(json.loads(json.dumps(old))) and len(restored._state) == len(half._state)
    assert restored._state[:8].tolist() == half._state[:8].tolist() and np.isnan(restored._state[8])
    more = [{"loss": t, "val/loss": v} for t, v in zip(train[2:], val[2:])]
    later = MetricBlock.from_rows(steps[2:], [0.0] * 3, more)
    assert [f.severity for f in restored.observe_block(later) + restored.on_end()]  # it still judges the run


def test_a_run_that_only_reports_evaluations_waits_longer_before_its_rhythm_is_known() -> None:
    from runwatch.models.diagnostics.stalled import StalledRunDiagnostic

    evals, train = StalledRunDiagnostic(), StalledRunDiagnostic()
    evals.observe_block(MetricBlock.from_rows([0], [1000.0], [{"val/acc": 0.3}]))
    train.observe_block(MetricBlock.from_rows([0], [1000.0], [{"loss": 2.3}]))
    assert (evals.timeout, train.timeout) == (3 * 4 * 900.0, 4 * 900.0)
    assert evals.on_idle(now=1000.0 + 6637.0, last_wall_time=1000.0, last_step=0) is None  # a CPU ResNet epoch
    assert train.on_idle(now=1000.0 + 6637.0, last_wall_time=1000.0, last_step=0) is not None


def _daily_latency(days: int, growth_per_day: float = 0.0, swing: float = 0.5,
                   seed: int = 0) -> tuple[list[int], list[float], list[dict]]:
    """One p99 latency a minute, (1 + swing) x the mean at the day's peak, noisy; optionally growing day by day."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 1440)
    day = np.sin(2 * np.pi * t / 1440 - np.pi / 2)
    p99 = 120 * (1 + swing * day) * (1 + growth_per_day) ** (t / 1440) * np.exp(0.15 * rng.standard_normal(len(t)))
    return t.tolist(), (1.7e9 + 60.0 * t).tolist(), [{"latency_ms/p99": float(v)} for v in p99]


@pytest.mark.parametrize("block", [1, 500])
def test_latency_drift_compares_a_daily_peak_with_the_same_hour_on_the_days_before(block: int) -> None:
    from runwatch.models.diagnostics.latency_drift import LatencyDriftConfig, LatencyDriftDiagnostic

    def findings(steps, walls, rows, **config):
        d, out = LatencyDriftDiagnostic(LatencyDriftConfig(**config)), []
        for i in range(0, len(rows), block):
            out += d.observe_block(MetricBlock.from_rows(steps[i:i + block], walls[i:i + block], rows[i:i + block]))
        return out

    cycle = _daily_latency(4)
    seasonal = findings(*cycle)
    assert seasonal and all(f.step < 1440 for f in seasonal)  # the first day's peak: nothing to compare the hour with
    assert any(f.step >= 1440 for f in findings(*cycle, season_s=0.0))  # without: every day's peak
    # a service that gets 40 % slower every day is a drift on the later days all the same (a gentler cycle, which
    # the first day does not flag: a peak that starts a drift episode keeps it open while the level keeps rising)
    leak = findings(*_daily_latency(4, growth_per_day=0.4, swing=0.1))
    assert leak and 1440 <= leak[0].step < 4 * 1440 and "this time of day" in leak[0].explanation


def test_an_error_rate_that_creeps_up_is_a_drift_the_spike_check_follows(default_suite: DiagnosticSuite) -> None:
    rng = np.random.default_rng(0)
    n = 2000
    p = np.where(np.arange(n) < 500, 0.002, 0.002 + (np.arange(n) - 500) / 1500 * 0.06)  # 0.2 % -> 6.2 %
    rates = rng.binomial(1000, p) / 1000
    events = [(i, 1.7e9 + 60.0 * i, {"error_rate": float(r)}) for i, r in enumerate(rates)]
    alerts = feed(events, default_suite, "serving")
    assert [(a.finding.detector, a.finding.severity) for a in alerts] == [
        ("error_rate_drift", Severity.WARNING), ("error_rate_drift", Severity.ERROR)], show(alerts)
    assert 0.015 <= rates[alerts[0].finding.step] <= 0.03  # about the 2 points the spike check's min_rate also asks
    # the same service at a steady 0.2 %, or at low traffic (3 requests a window), raises nothing
    steady = rng.binomial(1000, 0.002, n) / 1000
    low = np.maximum(1, rng.poisson(3, n))
    for series in (steady, rng.binomial(low, 0.003) / low):
        assert feed([(i, 1.7e9 + 60.0 * i, {"error_rate": float(r)}) for i, r in enumerate(series)], default_suite, "s") == []


def test_overfitting_seen_at_sparse_evaluations_is_one_incident() -> None:
    """An HF run evaluating every 400 steps (more than the alert policy's 200-step cool-down) whose validation loss
    climbs from its best while the training loss falls: one incident, escalating, not a new one at every evaluation
    (26 on a real log before)."""
    monitor = DiagnosticSuite(SuiteConfig(enabled=["overfitting"])).monitor("r")
    alerts = []
    for i in range(1, 31):
        step = 401 * i
        alerts += monitor.observe(step, 0.0, {"loss": 1.1 * 0.9**i, "val/loss": 1.1 + 0.06 * max(0, i - 1)})
    assert alerts and len({a.incident_id for a in alerts}) == 1
    assert [a.revision for a in alerts] == list(range(1, len(alerts) + 1))
    assert alerts[-1].finding.severity == Severity.ERROR


def test_a_condition_found_at_each_sparse_logged_step_is_one_incident() -> None:
    """A run logged every 500 steps (an HF Trainer's logging_steps) whose loss stopped improving: the plateau rule
    finds it again at each logged step, 500 steps apart, more than the 200-step cool-down. The cool-down is at least
    three logging intervals, so that is one incident; before, each logged step opened a new one."""
    monitor = DiagnosticSuite(SuiteConfig(enabled=["plateau"])).monitor("r")
    alerts = []
    for i in range(1, 121):
        loss = 2.5 * 0.97**i if i <= 20 else 2.5 * 0.97**20 + 0.002 * ((i * 7) % 5)
        alerts += monitor.observe(500 * i, 0.0, {"loss": loss})
    plateaus = [a for a in alerts if a.finding.kind == AnomalyKind.PLATEAU]
    assert plateaus and len({a.incident_id for a in plateaus}) == 1, [(a.first_step, a.finding.step) for a in plateaus]
    dense = DiagnosticSuite(SuiteConfig(enabled=["plateau"])).monitor("d")
    assert dense._logging_cooldown() == 0
    dense.observe_block(MetricBlock.from_rows(range(50), [0.0] * 50, [{"loss": 1.0}] * 50))
    assert dense._logging_cooldown() == 3  # dense logging keeps the policy's own 200 steps


def test_a_collapsed_nets_vanishing_gradients_and_update_ratios_are_one_warning_incident() -> None:
    """A transformer collapsing under a far too high learning rate: every layer's gradient vanishes and every layer
    stops updating. The first layer's finding is the root; the other layers' and the update ratios that follow are
    INFO, part of it (a tester's 12-layer BERT raised 43 WARNING+ incidents before)."""
    from runwatch.models.fusion import FindingFusion, FusionConfig

    fusion = FindingFusion(FusionConfig())
    vanishing = [Finding(AnomalyKind.VANISHING_GRADIENT, Severity.ERROR, 1e6, 91, f"grad_norm/layer.{i}",
                         "vanished", layer=f"layer.{i}", key=f"grad_norm/layer.{i}") for i in range(21)]  # fmt: skip
    ratios = [Finding(AnomalyKind.UPDATE_RATIO, Severity.WARNING, 1e3, 101, f"update_ratio/layer.{i}", "frozen",
                      layer=f"layer.{i}", key=f"update_ratio/layer.{i}") for i in range(21)]  # fmt: skip
    fusion.apply([*vanishing, *ratios], learned_normal=lambda step: False)
    loud = [f for f in vanishing + ratios if f.severity >= Severity.WARNING]
    assert [f.key for f in loud] == ["grad_norm/layer.0"]


def test_a_layers_small_gradient_in_a_run_that_learned_is_info() -> None:
    """A converged fine-tune (loss 0.003 from 0.7) whose attention query/key gradients are 1e-5 of the embeddings':
    the run is learning, so the layer's small gradient is INFO; a run whose loss stays up keeps the WARNING."""
    from runwatch.models.fusion import FindingFusion, FusionConfig

    def finding():
        return Finding(AnomalyKind.VANISHING_GRADIENT, Severity.WARNING, 1e5, 500, "grad_norm/layer.1.query",
                       "vanished", layer="layer.1.query", key="grad_norm/layer.1.query")  # fmt: skip

    learned, stuck = finding(), finding()
    FindingFusion(FusionConfig()).apply([learned], lambda step: False, None, lambda step, below: 0.003 / 0.7 <= below)
    FindingFusion(FusionConfig()).apply([stuck], lambda step: False, None, lambda step, below: 0.9 <= below)
    assert learned.severity == Severity.INFO and "below 0.1x its start" in learned.explanation
    assert stuck.severity == Severity.WARNING
    monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
    assert monitor._loss_fell is not None  # the learned diagnostic answers it in the default suite


def test_a_vanishing_layer_after_the_loss_fell_tenfold_is_info_through_the_default_suite() -> None:
    """The default suite end to end, on an HF-like log (the loss every 5 steps, per-layer gradient norms every
    step): a query layer's gradient falls to 1e-5 of the classifier's at step 150. Where the loss fell from 0.7 to
    under 0.07 by then that is INFO; where it stayed at 0.7 it is a WARNING. The finding's step (151) lies between
    two loss rows, so the row before it decides."""

    def alerts(learning: bool) -> list:
        monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
        out = []
        for step in range(1, 301):
            row = {"grad_norm/classifier": 0.03, "grad_norm/query": 3e-7 if step > 140 else 0.02}
            if step % 5 == 0:
                row["loss"] = 0.7 * (0.97**step if learning else 1.0 + 0.01 * ((step * 7) % 3))
            out += monitor.observe(step, 0.0, row)
        return [a for a in out if a.finding.kind == AnomalyKind.VANISHING_GRADIENT]

    learned, stuck = alerts(True), alerts(False)
    assert learned and all(a.finding.severity == Severity.INFO for a in learned)
    assert stuck and max(a.finding.severity for a in stuck) >= Severity.WARNING


def test_overfitting_of_a_loss_below_zero_is_judged_on_differences() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    # A real Lightning run (simulation-based inference, a negative log-likelihood; one validation per epoch): the
    # validation loss is best at epoch 2 (-0.507), then jumps to +16.3 and stays far above it while the training
    # loss keeps falling. Ratios of values below zero mean nothing; rises are taken over the best's magnitude.
    train = [-0.59, -0.597, -0.665, -0.761, -0.807, -0.803, -0.941, -0.995]
    val = [-0.153, -0.200, -0.507, 16.28, 2.284, 11.84, 0.919, 3.850]
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, val)]
    d = OverfittingDiagnostic()
    found = d.observe_block(MetricBlock.from_rows(range(8), [0.0] * 8, rows)) + d.on_end()
    assert [(f.step, f.severity) for f in found][-1] == (7, Severity.ERROR)
    assert "while loss fell -0.629 -> -0.927; val - train gap 4.78 (was 0.122 at the best)" in found[-1].explanation
    assert "3.85 is 859% above its best -0.507 (step 2)" in found[-1].explanation
    # A negative loss whose validation wobbles within a few percent of its best is not overfit.
    calm = [-0.153, -0.200, -0.507, -0.49, -0.51, -0.50, -0.52, -0.515]
    d = OverfittingDiagnostic()
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, calm)]
    assert not d.observe_block(MetricBlock.from_rows(range(8), [0.0] * 8, rows)) + d.on_end()


def test_overfitting_of_a_net_that_evaluates_below_its_training_loss() -> None:
    from runwatch.models.diagnostics.overfitting import OverfittingDiagnostic

    # A real Keras history (an image classifier with augmentation, 10 epochs): the validation loss sits below the
    # training loss, is best at epoch 7 and nearly doubles in the last two while the training loss keeps falling.
    # SageMaker's absolute gap ((val - train) / train > 0.1) never opens; the gap val / train widened 2.6x (0.375x -> 0.98x).
    train = [0.6104, 0.3111, 0.19, 0.1219, 0.0818, 0.0668, 0.0683, 0.042, 0.0393, 0.0402]
    val = [0.4128, 0.1709, 0.1202, 0.1313, 0.0499, 0.0329, 0.0458, 0.0246, 0.0461, 0.0454]
    rows = [{"loss": t, "val/loss": v} for t, v in zip(train, val)]
    d = OverfittingDiagnostic()
    found = d.observe_block(MetricBlock.from_rows(range(10), [0.0] * 10, rows)) + d.on_end()
    assert [(f.step, f.severity) for f in found] == [(9, Severity.WARNING)]
    assert "val/train gap 0.98x (was 0.375x at the best); the run ended so" in found[0].explanation
    # The same run evaluated once more, back at its best: not overfit.
    d = OverfittingDiagnostic()
    rows.append({"loss": 0.038, "val/loss": 0.0240})
    assert not d.observe_block(MetricBlock.from_rows(range(11), [0.0] * 11, rows)) + d.on_end()
