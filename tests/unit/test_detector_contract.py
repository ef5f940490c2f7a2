"""One contract over every detector, in the spirit of river's estimator checks.

Every registered diagnostic (rules and the learned one): its config round-trips
through JSON, it is deterministic, NaN/Inf/garbage values never crash it, its
findings follow the score convention (higher = more anomalous, finite, > 0),
and its state survives a JSON checkpoint so a restored copy continues exactly.
The learned models themselves: numpy serving equals the torch module, a
save/load round trip keeps every score, fitting is deterministic under a
seed, anomalies score higher than normal data, and bad input is refused
with an error naming the argument.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.learned.artifacts import ArtifactError, load_artifact
from runwatch.models.learned.features import FEATURES, RunFeatures
from runwatch.models.learned.forecaster import DivergenceForecaster, ForecasterConfig
from runwatch.models.learned.run_outlier import RunOutlierConfig, RunOutlierDetector
from runwatch.models.learned.sequence_ae import SequenceAEConfig, SequenceAutoencoder
from runwatch.models.registry import DIAGNOSTICS, diagnostic_class
from runwatch.models.snapshot import SnapshotError


def _run_events(n: int = 240, diverge_at: int | None = 150, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n):
        loss = 2.3 * math.exp(-s / 80) + 0.05 * rng.random()
        lr = 1e-3
        if diverge_at is not None and s >= diverge_at:
            lr = 0.5
            loss *= math.exp((s - diverge_at) / 6)
        m = {"loss": loss if s != n - 3 else float("nan"), "lr": lr, "grad_norm": 1.0 + rng.random() * (10 if s > 200 else 1),
             "grad_norm/fc1": 0.5 + rng.random(), "update_ratio/fc1": 1e-3 * (1 + rng.random()),
             "act/zero_frac/fc1": 0.2, "act/sat_frac/fc1": 0.0, "weight_norm/fc1": 3.0, "step_time": 0.01,
             "data_time": 0.001}
        if s % 20 == 0:
            m["val/loss"] = loss * (1.1 + s / 400)
        if s == 77:
            m["grad_norm"] = float("inf")
            m["junk"] = -1e308
        out.append((s, 1000.0 + s, m))
    return out


def _blocks(events, size):
    for i in range(0, len(events), size):
        chunk = events[i : i + size]
        yield MetricBlock.from_rows([e[0] for e in chunk], [e[1] for e in chunk], [e[2] for e in chunk])


def _findings(diag, events, size=25):
    out = []
    for b in _blocks(events, size):
        out += [(f.kind, f.step, round(f.score, 9), f.key) for f in diag.observe_block(b)]
    return out


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_every_detector_honours_the_contract(name):
    cls = diagnostic_class(name)
    cfg = cls.config_class()
    assert cls.config_class.from_json(cfg.to_json()) == cfg
    events = _run_events()
    first, second = cls(cfg), cls(cfg)
    got = _findings(first, events)
    assert got == _findings(second, events), "not deterministic"
    for b in _blocks(events, 25):
        for f in cls(cfg).observe_block(b):
            assert math.isfinite(f.score) and f.score > 0, f"{name}: score {f.score} breaks higher = more anomalous"
            assert f.explanation and f.metric
    # a JSON checkpoint in the middle continues exactly
    a = cls(cfg)
    head = [x for b in _blocks(events[:120], 25) for x in a.observe_block(b)]
    snap = json.loads(json.dumps(a.state_dict()))
    b = cls(cfg)
    assert b.load_state_dict(snap)
    tail_a = [(f.kind, f.step, round(f.score, 9)) for blk in _blocks(events[120:], 25) for f in a.observe_block(blk)]
    tail_b = [(f.kind, f.step, round(f.score, 9)) for blk in _blocks(events[120:], 25) for f in b.observe_block(blk)]
    assert tail_a == tail_b
    assert len(head) + len(tail_a) >= 0


def test_learned_models_see_a_diverging_run_and_the_suite_flags_it_early():
    from runwatch.models.learned.detector import LearnedDiagnostic
    from runwatch.models.learned.training import windows_of
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    ae = load_artifact().sequence_ae
    diverging, healthy = _run_events(diverge_at=150), _run_events(diverge_at=None)
    score = {name: ae.score_samples(windows_of(RunFeatures().update(next(_blocks(ev, len(ev))))[1], 16))
             for name, ev in (("diverging", diverging), ("healthy", healthy))}
    assert score["diverging"][170:230].mean() > 3 * score["healthy"][170:230].mean()
    assert not [f for f in _findings(LearnedDiagnostic(), healthy) if f[0].name == "DIVERGENCE_PREDICTED"]
    monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
    alerts = [a for b in _blocks(diverging, 25) for a in monitor.observe_block(b) if a.finding.severity.name != "INFO"]
    first = min(alerts, key=lambda a: a.first_step)
    assert 150 <= first.first_step < len(diverging) - 3, (first.first_step, first.finding.explanation)


def test_features_do_not_depend_on_batching():
    events = _run_events()
    whole = RunFeatures().update(next(_blocks(events, len(events))))[1]
    parts = RunFeatures()
    pieces = [parts.update(b)[1] for b in _blocks(events, 7)]
    np.testing.assert_allclose(np.concatenate(pieces), whole, equal_nan=True, rtol=1e-9, atol=1e-12)
    assert whole.shape[1] == len(FEATURES)


def test_learned_findings_and_gate_do_not_depend_on_batching(tmp_path):
    """The autoencoder scores every few steps (rows_to_score); which rows must not depend on the blocks."""
    from runwatch.models.learned.detector import LearnedConfig, LearnedDiagnostic

    art = load_artifact()
    sensitive = art.config.thresholds.model_copy(update={"sequence_alert": art.config.thresholds.sequence_gate})
    type(art)(art.config.model_copy(update={"thresholds": sensitive}), art.sequence_ae, art.forecaster,
              art.run_outlier).save(tmp_path)  # an alert level low enough that this run raises findings
    events = _run_events(diverge_at=150)
    runs = {}
    for size in (1, 7, 25, len(events)):
        d, gate = LearnedDiagnostic(LearnedConfig(artifact=str(tmp_path))), []
        found = []
        for b in _blocks(events, size):
            found += [(f.kind, f.step, f.score) for f in d.observe_block(b)]
            gate += [d.learned_normal(int(s)) for s in b.steps]
        runs[size] = (found, gate)
    # Decisions are equal; a score may differ in its last printed digit (matrix products over other
    # batch shapes round differently, and the 6-digit rounding of the error can land either side).
    for size in (7, 25, len(events)):
        assert [f[:2] for f in runs[size][0]] == [f[:2] for f in runs[1][0]] and runs[size][1] == runs[1][1]
        assert [f[2] for f in runs[size][0]] == pytest.approx([f[2] for f in runs[1][0]], rel=1e-5)
    assert runs[1][0], "the diverging run raised nothing"
    assert not all(runs[1][1]) and any(runs[1][1])


def test_exploding_gradient_the_loss_did_not_feel_is_info():
    """A gradient-norm spike alerts only once the training loss responds (fusion's loss_response_kinds)."""
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    def run(loss_after_spike):
        events = []
        for s in range(120):
            loss = 2.0 * math.exp(-s / 60) + 0.01 * (s % 3)
            gn = 1.0 + 0.05 * (s % 4)
            if s >= 100:
                gn = 400.0
                loss = loss_after_spike(s, loss)
            events.append((s, 1000.0 + s, {"loss": loss, "grad_norm": gn, "lr": 1e-3}))
        monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
        return [a.finding for b in _blocks(events, 10) for a in monitor.observe_block(b)
                if a.finding.kind.name == "EXPLODING_GRADIENT"]

    calm = run(lambda s, loss: loss)
    assert calm and all(f.severity.name == "INFO" for f in calm)
    assert "the training loss has not responded" in calm[0].explanation
    felt = run(lambda s, loss: loss * (1 + 0.5 * (s - 99)))
    assert any(f.severity.name in ("WARNING", "ERROR", "CRITICAL") for f in felt)


def test_exploding_gradient_far_beyond_clipping_alerts_with_a_calm_loss():
    """A norm 10,000x its typical level alerts although the loss is calm (loss_response_max_score).

    mlx-lm's LoRA trainer went from grad norm 4.2 to 1.8e8 while a skip guard kept the loss at 1.27.
    """
    from runwatch.models.registry import DiagnosticSuite, SuiteConfig

    def surges(peak):
        events = []
        for s in range(120):
            loss = 2.0 * math.exp(-s / 60) + 0.01 * (s % 3)
            gn = peak if s == 100 else 1.0 + 0.05 * (s % 4)
            events.append((s, 1000.0 + s, {"loss": loss, "grad_norm": gn, "lr": 1e-3}))
        monitor = DiagnosticSuite(SuiteConfig()).monitor("r")
        return [a.finding for b in _blocks(events, 10) for a in monitor.observe_block(b)
                if a.finding.kind.name == "EXPLODING_GRADIENT"]

    clipped = surges(900.0)  # ~850x: what clipped fp16/LoRA runs show, gated
    assert clipped and all(f.severity.name == "INFO" for f in clipped)
    blown = surges(2e5)
    assert blown and blown[0].severity.name in ("WARNING", "ERROR", "CRITICAL")
    assert "has not responded" not in blown[0].explanation


def test_numpy_serving_equals_torch():
    import torch

    rng = np.random.default_rng(1)
    windows = rng.normal(size=(64, 8, 5))
    windows[3, :2, 1] = np.nan
    ae = SequenceAutoencoder(SequenceAEConfig(window=8, n_features=5, epochs=2, seed=3)).fit(windows)
    module = ae._torch_module()
    module.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in ae.weights.items()})
    z, _ = ae.scaling.transform(windows.reshape(-1, 5))
    z = z.reshape(windows.shape).transpose(0, 2, 1)
    with torch.no_grad():
        want = module(torch.from_numpy(np.ascontiguousarray(z))).numpy()
    np.testing.assert_allclose(ae.reconstruct(z.astype(np.float64)), want, rtol=1e-4, atol=1e-5)

    pairs = rng.normal(size=(50, 2, 5))
    fc = DivergenceForecaster(ForecasterConfig(n_features=5, horizons=(10, 20), epochs=2)).fit(pairs, (pairs[:, 0, :2] > 0).astype(float))
    net = fc._torch_module()
    net.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in fc.weights.items()})
    with torch.no_grad():
        p = torch.sigmoid(net(torch.from_numpy(fc._inputs(pairs)))).numpy()
    np.testing.assert_allclose(fc.predict_proba(pairs), np.maximum.accumulate(p, axis=1), rtol=1e-4, atol=1e-6)


def test_fitting_is_deterministic_under_a_seed():
    rng = np.random.default_rng(2)
    windows = rng.normal(size=(64, 8, 3))
    a = SequenceAutoencoder(SequenceAEConfig(window=8, n_features=3, epochs=2, seed=5)).fit(windows)
    b = SequenceAutoencoder(SequenceAEConfig(window=8, n_features=3, epochs=2, seed=5)).fit(windows)
    np.testing.assert_array_equal(a.score_samples(windows), b.score_samples(windows))
    ref = rng.normal(size=(50, 3))
    r1 = RunOutlierDetector(RunOutlierConfig(seed=1)).fit(ref, ["a", "b", "c"]).score_samples(ref)
    r2 = RunOutlierDetector(RunOutlierConfig(seed=1)).fit(ref, ["a", "b", "c"]).score_samples(ref)
    np.testing.assert_array_equal(r1, r2)


@pytest.mark.parametrize("method", ["iforest", "ecod", "copod"])
def test_run_outlier_methods_score_outliers_higher(method):
    rng = np.random.default_rng(0)
    det = RunOutlierDetector(RunOutlierConfig(method=method)).fit(rng.normal(size=(100, 3)), ["a", "b", "c"])
    s = det.score_samples(np.array([[0.0, 0.0, 0.0], [0.0, 8.0, 0.0]]))
    assert s[1] > s[0]


def test_artifact_round_trip_keeps_scores(tmp_path):
    art = load_artifact()
    art.save(tmp_path / "copy")
    back = load_artifact(tmp_path / "copy")
    events = _run_events()
    _, x = RunFeatures().update(next(_blocks(events, len(events))))
    from runwatch.models.learned.training import pairs_of, windows_of

    w = windows_of(x, art.config.sequence_ae.window)
    np.testing.assert_array_equal(art.sequence_ae.score_samples(w), back.sequence_ae.score_samples(w))
    p = pairs_of(x, art.config.forecaster.lag)
    np.testing.assert_array_equal(art.forecaster.predict_proba(p), back.forecaster.predict_proba(p))
    assert back.config == art.config
    assert not list(tmp_path.glob("**/*.pkl")) and sorted(f.name for f in (tmp_path / "copy").iterdir()) == [
        "config.json", "weights.safetensors"]


def test_bad_input_is_named(tmp_path):
    ae = load_artifact().sequence_ae
    with pytest.raises(ValueError, match="windows: expected shape"):
        ae.score_samples(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="pairs: expected shape"):
        load_artifact().forecaster.predict_proba(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="reference: at least 8"):
        RunOutlierDetector().fit(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ArtifactError, match="config.json is missing"):
        load_artifact(tmp_path)
    load_artifact().save(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(tmp_path / "a")
    from runwatch.models.learned.detector import LearnedDiagnostic

    d = LearnedDiagnostic()
    assert not d.load_state_dict({"name": "learned", "version": "1", "config": d.config.to_dict(), "state": {"x": 1}})
    with pytest.raises(SnapshotError):
        from runwatch.models.snapshot import decode

        decode({"nd": "<f8", "shape": [1], "b64": 5}, "learned")


@pytest.mark.parametrize("module", [
    "runwatch.models.learned.features", "runwatch.models.learned.scaling", "runwatch.models.learned.sequence_ae",
    "runwatch.models.learned.forecaster", "runwatch.models.learned.run_outlier", "runwatch.models.learned.artifacts",
    "runwatch.models.learned.detector", "runwatch.models.fusion",
])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
