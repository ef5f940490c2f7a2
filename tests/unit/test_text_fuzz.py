"""The text path never fails on what a log can hold: random text and shuffled pieces of the formats it reads."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.models.text.extract import STEP_LIMIT, MetricExtractor
from runwatch.models.text.monitor import TextMonitor

PIECES = [
    "Epoch", "epoch", "Epoch 0: :", "[0/5]", "[50/1583]", "[100/1000]", "Step", "iter", "1epoch:train:1-100batch:",
    "loss=", "loss:", "Loss_D:", "reduced_train_loss=", "global_step=", "nan", "inf", "-inf", "1e400", "0.5", "12",
    "%|", "██", "| 50/50 [16:26<00:00,", "1it [00:04,", "]", "[", "|", "\t", "  ", "GPU_mem", "obj_loss", "0/99",
    "Training Loss", "Validation Loss", "No log", "[GIN]", "| 200 |", "1.5s", "12ms", "µs", "generate{",
    'total_time="', 'time_per_token="', '"', "GET /", "HTTP/1.1", "time:", "request", "duration_ms=", "took",
    "Traceback (most recent call last):", "CUDA out of memory", "NCCL", "rendezvous", "Killed", "results: [valid]",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(PIECES), max_size=12).map(" ".join)),
                max_size=40))
def test_the_text_path_reads_any_lines_without_failing(lines):
    x = MetricExtractor()
    events = x.extract_many(lines) + x.flush()
    last = -1
    for step, metrics in events:
        assert isinstance(step, int) and last <= step < STEP_LIMIT
        last = step
        assert metrics and all(isinstance(v, float) for v in metrics.values())
        assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("latency_ms"))
    tm = TextMonitor("fuzz")
    tm.observe_lines(lines)
    tm.flush()
