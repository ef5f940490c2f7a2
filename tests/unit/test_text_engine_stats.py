"""Inference-server stats lines (vLLM V0/V1, SGLang, llama.cpp's request timings): decode stalls, stuck queues, a full
KV cache.

The lines follow the formats of vLLM's stats loggers and SGLang's scheduler log; the numbers are made up.
"""

from __future__ import annotations

import json

import pytest

from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.text.engine_stats import EngineStatsConfig, EngineStatsWatch, parse_stats
from runwatch.models.text.monitor import TextMonitor


def v0(prompt, gen, running, pending=0, swapped=0, kv=3.0):
    return (f"INFO 07-11 14:02:{running:02d} metrics.py:455] Avg prompt throughput: {prompt:.1f} tokens/s, "
            f"Avg generation throughput: {gen:.1f} tokens/s, Running: {running} reqs, Swapped: {swapped} reqs, "
            f"Pending: {pending} reqs, GPU KV cache usage: {kv:.1f}%, CPU KV cache usage: 0.0%.")


def v1(prompt, gen, running, waiting=0, kv=3.0):
    return (f"(APIServer pid=77) INFO 09-02 08:15:10 [loggers.py:123] Engine 000: Avg prompt throughput: {prompt:.1f} "
            f"tokens/s, Avg generation throughput: {gen:.1f} tokens/s, Running: {running} reqs, Waiting: {waiting} reqs, "
            f"GPU KV cache usage: {kv:.1f}%, Prefix cache hit rate: 40.0%")


def sglang(gen, running, queue=0, usage=0.10):
    return (f"[2025-01-09 10:11:12 TP0] Decode batch. #running-req: {running}, #token: 5120, token usage: {usage:.2f}, "
            f"gen throughput (token/s): {gen:.2f}, #queue-req: {queue}")


def llama_timing(ms_per_token, tokens=10, old=False):
    rate = 1000.0 / ms_per_token
    if old:  # llama.cpp's llama_print_timings (before 2024; Ollama's bundled copy)
        return (f"llama_print_timings:        eval time = {ms_per_token * tokens:10.2f} ms / {tokens:5d} runs   "
                f"({ms_per_token:8.2f} ms per token, {rate:8.2f} tokens per second)")
    return f"       eval time = {ms_per_token * tokens:10.2f} ms / {tokens:5d} tokens ({ms_per_token:8.2f} ms per token, {rate:8.2f} tokens per second)"


def feed(lines, config=None):
    w = EngineStatsWatch(config)
    return [(f.signature, f.severity, f.line) for i, line in enumerate(lines) for f in w.feed(line, i)]


def test_the_three_formats_parse():
    a, b, c = parse_stats(v0(12.5, 300.0, 8, 2, 1, 97.5)), parse_stats(v1(0.0, 41.7, 1, 3, 2.2)), parse_stats(sglang(95.1, 3, 4, 0.97))
    assert (a.prompt_tps, a.gen_tps, a.running, a.waiting, a.swapped, a.kv_usage) == (12.5, 300.0, 8, 2, 1, 0.975)
    assert (b.prompt_tps, b.gen_tps, b.running, b.waiting, b.swapped, b.kv_usage) == (0.0, 41.7, 1, 3, 0, pytest.approx(0.022))
    assert (c.prompt_tps, c.gen_tps, c.running, c.waiting, c.kv_usage) == (None, 95.1, 3, 4, 0.97)
    assert parse_stats("INFO: throughput test passed") is None
    assert parse_stats('INFO:     10.0.0.1:5000 - "GET /metrics HTTP/1.1" 200 OK') is None


@pytest.mark.parametrize("make", [lambda: v0(0.0, 0.4, 2), lambda: v1(0.0, 0.4, 2), lambda: sglang(0.4, 2)])
def test_a_crawling_decode_is_a_warning_after_two_intervals(make):
    assert feed([make()]) == []
    assert feed([make(), make(), make()]) == [("decode_stall", Severity.WARNING, 0)]


def test_busy_and_idle_servers_are_quiet():
    busy = [v0(380.0, 118.5, 35, 10, 0, 80.0), v1(0.0, 41.7, 1), sglang(4594.0, 233, 317, 0.82)] * 3
    idle = [v0(0.0, 0.0, 0), v1(0.0, 0.0, 0)] * 3
    assert feed(busy) == [] and feed(idle) == []


def test_an_interval_with_a_prefill_is_not_a_stall():
    # A request admitted late in an interval: its prompt is processed, little is generated yet.
    assert feed([v0(2.4, 0.2, 1), v0(0.0, 35.0, 1), v0(2.4, 0.2, 1), v0(0.0, 36.0, 1)]) == []


def test_requests_waiting_with_none_running_for_two_intervals_is_a_stuck_queue():
    # Prompt tokens were counted early in the first interval, yet nothing runs and the queue grows.
    assert feed([v0(70.0, 5.0, 0, 12, kv=0.0), v0(0.0, 0.0, 0, 22, kv=0.0)]) == [("queue_stalled", Severity.WARNING, 0)]
    assert feed([v0(70.0, 5.0, 0, 12, kv=0.0), v0(80.0, 40.0, 3, 9, kv=2.0)]) == []  # admitted in the next interval
    w = EngineStatsWatch()
    msgs = [f.message for i, line in enumerate([v0(70.0, 5.0, 0, 12), v0(60.0, 0.0, 0, 22)]) for f in w.feed(line, i)]
    assert msgs == ["22 request(s) waiting and none running over 2 stats intervals, KV cache 3%"]


def test_no_token_generated_beside_prefill_for_two_intervals_is_a_stall():
    # Decoding stopped while new prompts are prefilled (no chunked prefill): the running requests get nothing.
    starved = [v0(1000.0, 0.0, 20, 5), v0(1100.0, 0.0, 22, 3)]
    assert feed([v0(0.0, 120.0, 20, 5), *starved, v0(0.0, 130.0, 22, 0)]) == [("decode_stall", Severity.WARNING, 1)]
    # One such interval is a burst of arrivals, and a slow decode beside prefill is the prefill's share of the GPU.
    assert feed([v0(1000.0, 0.0, 20, 5), v0(0.0, 120.0, 20, 5)] * 3) == []
    assert feed([v0(1000.0, 0.4, 20, 5)] * 3) == []
    w = EngineStatsWatch()
    msgs = [f.message for i, line in enumerate(starved) for f in w.feed(line, i)]
    assert msgs == [("0 tokens/s generated for 22 running request(s) over 2 stats intervals while prompts were "
                     "prefilled at 1100 tokens/s: decoding waits on prefill")]


def test_a_queue_that_is_never_admitted_is_a_warning_but_a_full_cache_is_information():
    stuck = [v1(0.0, 5.4, 1, 14, 76.5)] * 3
    assert feed(stuck) == [("queue_stalled", Severity.WARNING, 0)]
    full = [v0(382.6, 118.5, 35, 115, 0, 99.0), v0(0.0, 120.0, 35, 115, 0, 99.0)]
    assert feed(full) == [("kv_cache_saturated", Severity.INFO, 0)]


def test_one_finding_per_episode_and_a_new_one_after_recovery():
    lines = [v0(0.0, 0.4, 2)] * 4 + [v0(0.0, 50.0, 2)] + [v0(0.0, 0.3, 2)] * 2
    assert feed(lines) == [("decode_stall", Severity.WARNING, 0), ("decode_stall", Severity.WARNING, 5)]


def test_thresholds_are_settings():
    cfg = EngineStatsConfig(min_decode_rate=30.0, stall_intervals=3)
    assert feed([v1(0.0, 41.7, 2)] * 3, cfg) == [("decode_stall", Severity.WARNING, 0)]
    assert EngineStatsConfig.from_json(cfg.to_json()) == cfg


def test_through_the_text_monitor_with_evidence_and_a_checkpoint_between_the_intervals():
    lines = [v0(0.0, 0.4, 2), 'INFO:     10.0.0.1:5000 - "POST /v1/completions HTTP/1.1" 200 OK', v0(0.0, 0.4, 2)]
    a = TextMonitor("serve")
    assert a.observe_lines(lines[:2])[1] == []
    state = json.loads(json.dumps(a.state_dict()))
    b = TextMonitor("serve", miner=a.miner)
    assert b.load_state_dict(state)
    _, found = b.observe_lines(lines[2:])
    assert [(f.kind, f.key, f.severity, f.metric) for f in found] == [
        (AnomalyKind.LOG_PATTERN, "decode_stall", Severity.WARNING, "log/decode_stall")
    ]
    assert found[0].lines == [lines[0], lines[2]] and "0.2 per request" in found[0].explanation
    assert b.finding_lines == [0]


def test_a_checkpoint_from_before_the_engine_checks_still_loads():
    a = TextMonitor("serve")
    a.observe_lines(["Epoch: 1/30", "Train Loss: 7.3080"])
    state = a.state_dict()
    del state["engine"], state["config"]["engine"]
    b = TextMonitor("serve", miner=a.miner)
    assert b.load_state_dict(state) and b.lines == 2


@pytest.mark.parametrize("old", [False, True])
def test_llama_cpp_requests_decoding_under_one_token_a_second_are_a_stall(old):
    prompt = "prompt eval time =    7000.00 ms /  2000 tokens (    3.50 ms per token,   285.71 tokens per second)"
    assert parse_stats(prompt) is None  # the prefill's rate is not the decode's
    slow, fast = llama_timing(2500.0, old=old), llama_timing(25.0, old=old)
    assert parse_stats(slow).gen_tps == pytest.approx(0.4) and parse_stats(slow).per_request
    assert feed([prompt, slow, prompt, slow]) == [("decode_stall", Severity.WARNING, 1)]
    assert feed([slow, fast, slow, fast]) == []  # one slow request among healthy ones is not a stalled server
    assert feed([llama_timing(5000.0, tokens=1)] * 3) == []  # a one-token answer's rate is its first token's latency
