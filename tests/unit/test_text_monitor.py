"""TextMonitor: one run's lines to metric events and LOG_PATTERN findings, with JSON-safe per-run state."""

from __future__ import annotations

import json

import pytest

from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig
from runwatch.models.text.monitor import TextMonitor, TextMonitorConfig
from runwatch.models.text.sequence import NextTemplateConfig, NextTemplateModel, NoveltyConfig
from runwatch.models.text.templates import TemplateMiner

LINES = [
    "Epoch: 1/30",
    "Train Loss: 7.3080 - Train Perplexity: 1492.26",
    "Valid Loss: 6.5195 - Valid Perplexity: 678.23",
    "Epoch 0:  11%|█         | 2/18 [00:11<01:33,  5.82s/it, loss=10.473]",
    ("[2024-03-02 11:20:31,442] [INFO] [loss_scaler.py:183:update_scale] [deepspeed] OVERFLOW! Rank 0 Skipping step. "
    "Attempted loss scale: 16, reducing to 8"),
    "Traceback (most recent call last):",
    '  File "train.py", line 88, in <module>',
    # -- a snapshot is taken here: a traceback is open and a progress bar is held
    "    main(cfg)",
    "RuntimeError: DataLoader worker (pid 28311) is killed by signal: Killed.",
    "Epoch 0:  17%|█▋        | 3/18 [00:14<01:13,  4.87s/it, loss=nan]",
    " iteration       40/    1000 | lm loss: 2.340000E+00 | grad norm: inf | loss scale: 0.5 |",
    "something never printed before in this project",
]


def view(events, findings):
    return repr(events), [(f.kind, f.severity, f.step, f.metric, f.key, f.explanation, f.lines) for f in findings]


def test_lines_to_events_and_findings():
    tm = TextMonitor("r", TextMonitorConfig(novelty=NoveltyConfig(warmup_lines=5)))
    events, findings = tm.observe_lines(LINES)
    e2, f2 = tm.flush()
    assert [s for s, _ in events + e2] == [1, 1, 2, 3, 40]
    keys = [f.key for f in findings + f2]
    assert [k for k in keys if not k.startswith("new_template:")] == ["fp16_overflow", "dataloader_worker_killed", "fp16_overflow"]
    assert any(k.startswith("new_template:") for k in keys)
    dl = next(f for f in findings if f.key == "dataloader_worker_killed")
    assert dl.kind == AnomalyKind.LOG_PATTERN and dl.severity == Severity.CRITICAL and len(dl.lines) == 4
    assert dl.metric == "log/dataloader_worker_killed" and "fix:" in dl.explanation
    assert [f.severity for f in findings if f.key == "fp16_overflow"][-1] == Severity.CRITICAL  # loss scale 0.5 < 1


def test_a_long_multi_line_record_is_read_to_its_last_line():
    # A traceback shipped as one message (a log shipper's multi-line record) names its error on its last line,
    # past the per-line cut; so does a progress bar redrawn with \r, whose latest values come last.
    frames = [f'  File "/opt/venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line {i}, in _call_impl\n'
              f"    return forward_call(*args, **kwargs)" for i in range(60)]
    record = "\n".join(["Traceback (most recent call last):", *frames,
                        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."])
    bar = "\r".join(f"Epoch 0: {i:3d}%|#   | {i}/100 [00:01<00:09, 9.9it/s, loss={1 - i / 200:.3f}]" for i in range(1, 101))
    assert len(record) > 2 * 4096 and len(bar) > 4096
    tm = TextMonitor("r")
    events, findings = tm.observe_lines([record, bar])
    events += tm.flush()[0]
    oom = [f for f in findings if f.key == "cuda_oom"]
    assert len(oom) == 1 and oom[0].severity == Severity.CRITICAL
    assert events[-1] == (100, {"loss": 0.5})


@pytest.mark.parametrize("cut", [1, 4, 7, 10])
def test_snapshot_round_trip_continues_exactly(cut):
    cfg = TextMonitorConfig(novelty=NoveltyConfig(warmup_lines=3))
    a = TextMonitor("r", cfg)
    a.observe_lines(LINES[:cut])
    state = json.loads(json.dumps(a.state_dict()))
    b = TextMonitor("r", cfg, miner=TemplateMiner.from_json(a.miner.to_json()))
    assert b.load_state_dict(state)
    ra = view(*a.observe_lines(LINES[cut:])), view(*a.flush())
    rb = view(*b.observe_lines(LINES[cut:])), view(*b.flush())
    assert ra == rb


def test_state_from_another_config_is_refused():
    a = TextMonitor("r")
    b = TextMonitor("r", TextMonitorConfig(extract_metrics=False))
    assert not b.load_state_dict(a.state_dict())


def test_events_feed_the_metric_detectors():
    monitor = DiagnosticSuite(SuiteConfig(enabled=["nonfinite"])).monitor("r")
    tm = TextMonitor("r")
    events, findings = tm.observe_lines(["{'loss': 0.0, 'grad_norm': nan, 'learning_rate': 0.0001, 'epoch': 0.1}"] * 3)
    from runwatch.models.block import MetricBlock

    block = MetricBlock.from_values([s for s, _ in events], [0.0] * len(events), [tuple(m) for _, m in events],
                                    [list(m.values()) for _, m in events])
    alerts = monitor.observe_block(block)
    assert findings == [] and any(a.finding.kind == AnomalyKind.NONFINITE for a in alerts)
    alerts = monitor.report(tm.observe_lines(["RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB"])[1])
    assert [a.finding.metric for a in alerts] == ["log/cuda_oom"] and alerts[0].finding.detector == "log_text"


def test_a_custom_loops_prints_reach_the_divergence_checks_in_every_epoch():
    """``print(f"epoch {e} step {i} loss {loss:.4f} lr {lr}")``, ``i`` counting within the epoch, the loss blowing up
    in the fourth epoch: the default suite warns as it blows up, and not before (before 2026-12-04 these lines
    gave no metric at all, and with colons every epoch after the first was dropped)."""
    import math

    from runwatch.models.block import MetricBlock

    lines, blown = [], None
    for e in range(4):
        for i in range(0, 500, 10):
            t = e * 500 + i
            loss = 2.3 * math.exp(-t / 600) + 0.1 if t <= 1700 else 0.3 * 1.05 ** (t - 1700)
            if blown is None and loss > 10 * 0.3:
                blown = t
            lines.append(f"epoch {e} step {i} loss {loss:.4f} lr 0.001")
    tm, monitor, alerts = TextMonitor("r"), DiagnosticSuite(SuiteConfig()).monitor("r"), []
    for k in range(0, len(lines), 20):
        events, _ = tm.observe_lines(lines[k : k + 20])
        alerts += monitor.observe_block(MetricBlock.from_values(
            [s for s, _ in events], [0.0] * len(events), [tuple(m) for _, m in events], [list(m.values()) for _, m in events]))
    assert tm.extractor.dropped == 0
    warned = [a.finding.step for a in alerts if a.finding.severity >= Severity.WARNING]
    # the run's steps are estimated: each epoch follows the previous one's last printed step (490 + 1), so the
    # fourth epoch's step i is read as 3 * 491 + i
    assert warned and 1700 - 27 <= min(warned) <= blown - 27 + 3 * 10, (warned, blown)


def test_sequence_model_flags_unexpected_lines(tmp_path):
    miner = TemplateMiner()
    normal = ["worker started", "batch loaded", "step done", "worker stopped"]
    seqs = []
    for _ in range(30):
        seqs.append([miner.add(x).template for x in normal])
    model = NextTemplateModel(NextTemplateConfig(window=2, hidden=8, embedding=4, layers=1, epochs=40)).fit(seqs)
    path = model.save(tmp_path / "m")
    tm = TextMonitor("r", TextMonitorConfig(sequence_model=str(path), sequence_top_k=2), miner=miner)
    _, findings = tm.observe_lines(["worker started", "worker stopped", "batch loaded"])
    assert [f.key for f in findings][:1] == ["unexpected_sequence"]


def test_pipeline_checkpoint_carries_text_state(tmp_path):
    """A run moving between instances mid-traceback raises the same anomalies as one that stays."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    def pipeline(name):
        settings = ServiceSettings(data_dir=tmp_path / name, diagnostics=SuiteConfig(enabled=["nonfinite"]))
        return DetectionPipeline(settings, RunStore(settings.db_path))

    def batch(seq, lines, start=False):
        b = runs_pb2.EventBatch(sequence=seq)
        if start:
            b.starts.add(run_id="r1", project="p")
        for text in lines:
            b.logs.add(run_id="r1", text=text, time=1.0)
        return b

    stay, source, target = pipeline("a"), pipeline("b"), pipeline("c")
    first = batch(1, LINES[:7], start=True)
    stay.ingest(first)
    source.ingest(first)
    target.restore_run(source.snapshot_run("r1"))
    rest = batch(2, LINES[7:])
    got = [[(a.id, a.kind, a.severity, list(a.log_lines)) for a in p.ingest(rest).anomalies] for p in (stay, target)]
    assert got[0] == got[1] and any(k == 13 for _, k, _, _ in got[0])
    for p in (stay, source, target):
        p.store.close()


def test_a_traceback_followed_by_more_iterations_is_dated_and_named_alike_however_lines_are_batched():
    """A traceback the run survives (an OOM caught and retried), then Megatron iteration lines that start with one
    space: the traceback ends at the first iteration line, its finding names the exception and is dated at the step
    it began at. Before, in one batch the traceback took every later line as its own and was reported at the last
    one's step, quoting an iteration line; split after it, at its own step: a failed-over consumer disagreed with
    an uninterrupted one."""
    it = [f" iteration {i * 10:8d}/    3000 | lm loss: 2.0E+00 | grad norm: 1.1 | number of skipped iterations: 0 |"
          for i in range(1, 61)]  # fmt: skip
    tb = ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
          "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]  # fmt: skip
    lines = it[:40] + tb + it[40:]

    def oom_findings(batches):
        tm = TextMonitor("r")
        found = []
        for batch in batches:
            found += tm.observe_lines(batch)[1]
        return [(f.step, f.key, f.explanation[:60]) for f in found if f.key == "cuda_oom"]

    whole = oom_findings([lines])
    assert whole == [(400, "cuda_oom", "GPU out of memory: torch.cuda.OutOfMemoryError: CUDA out of ")]
    assert oom_findings([lines[:43], lines[43:]]) == whole
    assert oom_findings([lines[:30], lines[30:50], lines[50:]]) == whole
    assert oom_findings([lines[:41], lines[41:]]) == whole  # cut inside it: a first, generic report, then this one


def test_the_last_state_of_a_progress_bar_is_delivered_when_the_run_ends(tmp_path):
    """Lightning's bar, one line per epoch as a captured stream keeps it: a bar's values are held until it moves on,
    so the last epoch's NaN is known only when the stream ends. ``LogTextAnalysis.end`` (the pipeline calls it on the
    run's ``RunEnd``) delivers it; before, it was dropped with the run's text state."""
    import math
    import time

    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import anomaly_pb2, runs_pb2

    settings = ServiceSettings(data_dir=tmp_path, diagnostics=SuiteConfig(enabled=["nonfinite"]))
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="r1", project="p")
    for epoch, loss in enumerate(["1.450", "1.020", "0.850", "nan"]):
        bar = f"Epoch {epoch}: 100%|██████████| 391/391 [00:29<00:00, 13.10it/s, v_num=3, "
        b.logs.add(run_id="r1", text=bar + f"train_loss={loss}, val_loss={loss}]")
    assert [a.kind for a in p.ingest(b).anomalies] == []
    alerts, read = p.text.end(p.runs["r1"], time.time())
    assert [s for s, _ in read] == [4 * 391] and math.isnan(read[0][1]["loss"])
    assert [int(a.finding.kind) for a in alerts] == [anomaly_pb2.ANOMALY_KIND_NONFINITE]
    assert p.text.end(p.runs["r1"], time.time()) == ([], [])  # nothing is held twice
    p.store.close()


def test_a_progress_bar_that_goes_quiet_is_read_as_final_without_a_run_end(tmp_path):
    """A log shipper (the Kafka logs topic) never sends a RunEnd: the last bar state a hung or killed job printed,
    here a loss that became nan, is delivered by the time-based checks once the run's text has been quiet for
    ``text_hold_s``, stored as read metrics, and not before. A bar that moves on afterwards reports as usual."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import anomaly_pb2, runs_pb2

    settings = ServiceSettings(data_dir=tmp_path, diagnostics=SuiteConfig(enabled=["nonfinite"]), text_hold_s=10.0)
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="r1", project="p")
    for epoch, loss in enumerate(["1.450", "1.020", "nan"]):
        bar = f"Epoch {epoch}: 100%|##########| 391/391 [00:29<00:00, 13.10it/s, v_num=3, "
        b.logs.add(run_id="r1", text=bar + f"train_loss={loss}]")
    assert [a.kind for a in p.ingest(b).anomalies] == []
    last = p.runs["r1"].last_received
    assert p.tick(last + 5.0) == []  # still within text_hold_s: the bar may move on
    got = p.tick(last + 11.0)
    assert [a.kind for a in got] == [anomaly_pb2.ANOMALY_KIND_NONFINITE] and got[0].step == 3 * 391
    assert p.tick(last + 12.0) == []  # nothing is held twice
    p.store.flush()
    steps = [e.step for e in p.store.events("r1")]
    assert steps[-1] == 3 * 391
    b = runs_pb2.EventBatch(sequence=2)
    b.logs.add(run_id="r1", text="Epoch 3: 100%|##########| 391/391 [00:29<00:00, 13.10it/s, v_num=3, train_loss=nan]")
    b.logs.add(run_id="r1", text="Epoch 4: 100%|##########| 391/391 [00:29<00:00, 13.10it/s, v_num=3, train_loss=nan]")
    p.ingest(b)
    _, read = p.text.end(p.runs["r1"], last + 30.0)
    assert [s for s, _ in read] == [5 * 391]
    p.store.close()


def test_a_printed_copy_of_a_logged_metric_makes_no_second_series(tmp_path):
    """A script logs val_loss through the SDK and prints it too (capture_output): the line's val/loss is the same
    metric under runwatch's name, so it is not stored again (before: a second, 4-digit val/loss series beside
    val_loss). A metric only the text has still is."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import runs_pb2

    settings = ServiceSettings(data_dir=tmp_path, diagnostics=SuiteConfig(enabled=["nonfinite"]))
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="r1", project="p")
    b.events.add(run_id="r1", step=20).metrics.update({"loss": 1.2051234, "val_loss": 1.1726345})
    b.logs.add(run_id="r1", text="step 20 loss 1.2051 val_loss 1.1726 grad_norm 0.75")
    p.ingest(b)
    p.store.flush()
    stored = {}
    for e in p.store.events("r1"):
        for k, v in e.metrics.items():
            stored.setdefault(k, []).append(v)
    assert stored["val_loss"] == [1.1726345] and stored["grad_norm"] == [0.75]
    assert "val/loss" not in stored
    p.store.close()


def test_a_text_only_run_that_goes_quiet_is_flagged_as_stalled(tmp_path):
    """Lines are telemetry: a run that sends only log lines (piped stdout, the logs topic) and then hangs, here
    before its first iteration, is flagged STALLED like a metric run; one that keeps printing is not."""
    from runwatch.service.pipeline import DetectionPipeline
    from runwatch.service.settings import ServiceSettings
    from runwatch.service.store import RunStore
    from runwatch.v1 import anomaly_pb2, runs_pb2

    settings = ServiceSettings(data_dir=tmp_path)
    p = DetectionPipeline(settings, RunStore(settings.db_path))
    b = runs_pb2.EventBatch(sequence=1)
    b.starts.add(run_id="hung", project="p")
    b.starts.add(run_id="busy", project="p")
    for run_id in ("hung", "busy"):
        b.logs.add(run_id=run_id, text="[INFO] [engine.py:83:__init__] CONFIG: micro_batches=6 micro_batch_size=1")
    p.ingest(b)
    heard = p.runs["hung"].last_received
    assert heard > 0
    for k, now in enumerate([heard + 1200, heard + 2400, heard + 3600], start=2):
        keep = runs_pb2.EventBatch(sequence=k)
        keep.logs.add(run_id="busy", text=f"still initialising, {k * 20} minutes")
        p.ingest(keep)
        p.runs["busy"].last_received = now  # its lines arrived at these times
    assert p.tick(now=heard + 600) == []
    stalled = p.tick(now=heard + 4 * 900 + 60)  # before a run has shown three gaps the timeout is 4 x 900 s
    assert [(a.run_id, a.kind) for a in stalled] == [("hung", anomaly_pb2.ANOMALY_KIND_STALLED)]
    p.store.close()
