"""Text log lines through the real service: SDK ``run.log_text`` over gRPC on loopback."""

from __future__ import annotations

import time

import grpc
import pytest

from runwatch.client import RunwatchClient
from runwatch.service.store import RunStore
from runwatch.v1 import anomaly_pb2, runs_pb2, service_pb2

# Written for these tests in the shapes Megatron-LM prints (training.py's training_log) and
# PyTorch raises; no line is copied from a real log.
MEGATRON = [
    f" iteration {i:8d}/   20000 | consumed samples: {i * 512:12d} | elapsed time per iteration (ms): 843.2 |"
    f" learning rate: 3.000E-04 | global batch size:   512 | lm loss: {v} | loss scale: 65536.0 |"
    f" grad norm: {g} | number of skipped iterations:   0 | number of nan iterations:   0 |"
    for i, v, g in [(10, "7.412309E+00", "4.118"), (20, "6.981125E+00", "3.872"), (30, "6.702218E+00", "nan")]
]
CUDA_OOM = [
    "Traceback (most recent call last):",
    '  File "/workspace/pretrain_gpt.py", line 418, in <module>',
    "    pretrain(train_valid_test_datasets_provider, model_provider)",
    '  File "/workspace/megatron/training/training.py", line 311, in train_step',
    "    losses_reduced = forward_backward_func(",
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 3.91 GiB. GPU 0 has a total capacity of "
    "79.15 GiB of which 1.02 GiB is free. Of the allocated memory 75.40 GiB is allocated by PyTorch."),
]


def wait_for(stubs, run_id: str, pred, timeout: float = 15.0) -> list[anomaly_pb2.Anomaly]:
    deadline = time.time() + timeout
    while True:
        got = list(stubs.runs.GetRun(service_pb2.GetRunRequest(run_id=run_id), timeout=10).anomalies)
        if pred(got) or time.time() > deadline:
            return got


@pytest.fixture
def client(server):
    srv, _ = server
    c = RunwatchClient(srv.target, flush_on_exit=False)
    yield c
    c.close(timeout=2)


def test_log_text_raises_log_pattern_and_metric_detectors(server, client):
    srv, stubs = server
    run = client.start_run(run_id="text-megatron", project="text")
    for line in MEGATRON:
        run.log_text(line)
    assert run.flush(timeout=10)
    for line in CUDA_OOM:
        run.log_text(line, level="error")
    assert run.flush(timeout=10)

    def done(got):
        kinds = {a.kind for a in got}
        return {anomaly_pb2.ANOMALY_KIND_NONFINITE, anomaly_pb2.ANOMALY_KIND_LOG_PATTERN} <= kinds

    got = wait_for(stubs, "text-megatron", done)
    nonfinite = [a for a in got if a.kind == anomaly_pb2.ANOMALY_KIND_NONFINITE]
    assert nonfinite and nonfinite[0].step == 30 and "grad_norm" in nonfinite[0].metrics
    oom = [a for a in got if a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN and a.metrics[0] == "log/cuda_oom"]
    assert len(oom) == 1, got
    a = oom[0]
    assert a.severity == anomaly_pb2.SEVERITY_CRITICAL and a.detector == "log_text"
    assert a.log_lines[0] == CUDA_OOM[0] and a.log_lines[-1] == CUDA_OOM[-1]
    assert "fix:" in a.explanation and a.step == 30
    assert run.finish(timeout=10)

    # What was read from the text is the run's metric history: summaries (runwatch show) and the stored events.
    summary = stubs.runs.GetRun(service_pb2.GetRunRequest(run_id="text-megatron"), timeout=10)
    loss = {m.name: m for m in summary.metrics}["loss"]
    assert (loss.count, loss.last_step, loss.min, loss.max) == (3, 30, 6.702218, 7.412309)
    assert summary.run.last_step == 30 and summary.run.event_count == 3

    # The project's templates are in the store once the server has stopped.
    srv.stop()
    store = RunStore(srv.settings.db_path)
    try:
        assert '"format":"runwatch.templates/1"' in (store.template_state("text") or "")
    finally:
        store.close()


def test_text_alert_is_deduplicated_and_streamed(server, client):
    srv, stubs = server
    call = stubs.watch.WatchAnomalies(service_pb2.WatchRequest(project="text-watch"), timeout=20)
    deadline = time.time() + 5
    while srv.server.hub.watchers < 1 and time.time() < deadline:
        time.sleep(0.01)
    run = client.start_run(run_id="text-watch-1", project="text-watch")
    for _ in range(2):  # the same failure printed twice is one incident
        run.log_text("[rank3]:[E1105 10:02:11.482 ProcessGroupNCCL.cpp:616] [Rank 3] Watchdog caught collective "
                     "operation timeout: WorkNCCL(SeqNum=9021, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
                     "Timeout(ms)=600000) ran for 600102 milliseconds before timing out.")
        assert run.flush(timeout=10)
    first = next(iter(call))
    call.cancel()
    assert first.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN and first.metrics[0] == "log/nccl_timeout"
    got = wait_for(stubs, "text-watch-1", lambda g: len(g) >= 1)
    assert [a.id for a in got] == [first.id]


def test_a_bare_value_turning_nan_in_a_custom_loop_is_a_warning(server, client):
    # print(step, loss.item()) in a custom loop: no reader can name the value, its place in the line can.
    _, stubs = server
    run = client.start_run(run_id="text-bare-nan", project="text-bare")
    for step, loss in [(100, "2.71"), (110, "2.65"), (120, "2.69"), (130, "nan"), (140, "nan")]:
        run.log_text(f"{step} {loss}")
        assert run.flush(timeout=10)
    got = wait_for(stubs, "text-bare-nan", lambda g: any(a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN for a in g))
    found = [a for a in got if a.kind == anomaly_pb2.ANOMALY_KIND_LOG_PATTERN]
    assert [(a.metrics[0], a.severity, list(a.log_lines)) for a in found] == [
        ("log/nonfinite_message", anomaly_pb2.SEVERITY_WARNING, ["130 nan"])]
    assert run.finish(timeout=10)


def test_metric_only_batches_leave_text_alone(server, client):
    srv, _ = server
    run = client.start_run(run_id="text-none", project="text")
    for i in range(20):
        run.log({"loss": 1.0 / (i + 1)}, step=i)
    assert run.finish(timeout=10)
    assert srv.server.pipeline.text.miners == {}


def test_log_lines_of_an_unknown_run_are_still_rejected(server):
    _, stubs = server
    b = runs_pb2.EventBatch(sequence=1)
    b.logs.add(run_id="nobody", text="CUDA out of memory")
    with pytest.raises(grpc.RpcError) as err:
        stubs.ingest.Ingest(b, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown run" in err.value.details()
