"""Inference-server health from the engines' periodic stats lines (vLLM, SGLang).

LLM servers print their scheduler's state every few seconds; the numbers on
those lines tell a hung or crawling engine from a busy one long before a
client times out:

- vLLM (V0 ``metrics.py``, V1 ``loggers.py``): ``Avg prompt throughput: 0.0 tokens/s,
  Avg generation throughput: 0.4 tokens/s, Running: 2 reqs, Swapped: 0 reqs,
  Pending: 0 reqs, GPU KV cache usage: 0.6%`` (V1 says ``Waiting`` for
  ``Pending`` and has no ``Swapped``);
- SGLang's scheduler: ``Decode batch. #running-req: 233, #token: 370959,
  token usage: 0.82, gen throughput (token/s): 4594.01, #queue-req: 317``;
- llama.cpp's server (and Ollama's runner) after each request: ``eval time =
  26581.48 ms / 10 tokens ( 2658.15 ms per token, 0.38 tokens per second)``
  (``llama_print_timings: eval time = ... ms / 31 runs (...)`` before 2024),
  read as one running request decoding at that rate; its ``prompt eval time``
  line is the prefill and is not read.

:class:`EngineStatsWatch` reads those lines of one run and raises, as text
findings with the stats lines as evidence:

- ``decode_stall`` (WARNING): requests are running and generation runs below
  ``min_decode_rate`` tokens/s per running request for ``stall_intervals``
  stats lines in a row, with no prompt being prefilled, or with none generated
  at all while prompts are. GPU decoding makes tens of tokens per second per
  request; under 1 the engine is crawling (CPU fallback, swapping, a stuck
  kernel), and at 0 beside prefill the running requests wait on new prompts
  (no chunked prefill). Every client sees either as latency.
- ``queue_stalled`` (WARNING, vLLM): requests wait, the KV cache has room
  (below ``kv_full``), and no prompt tokens are processed, or no request runs
  at all, for ``stall_intervals`` stats lines: the scheduler admits nothing,
  the hang users report as "requests stuck in Waiting".
- ``kv_cache_saturated`` (INFO): the KV cache is at least ``kv_full`` used
  while requests wait (or are swapped out): the server is at capacity. A busy
  server runs there by design, so this is information, not an alert.

A finding is raised once per episode; the episode ends at a stats line that
no longer meets its condition. One interval alone is never enough for a
WARNING: a stats interval can straddle a request's admission, which the next
interval shows.

Examples
--------
>>> w = EngineStatsWatch()
>>> line = ("INFO 03-18 09:04:46 [metrics.py:481] Avg prompt throughput: 0.0 tokens/s, Avg generation "
...         "throughput: 0.4 tokens/s, Running: 2 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: 0.6%")
>>> w.feed(line, 0), [(f.signature, f.severity.name, f.line) for f in w.feed(line, 1)]
([], [('decode_stall', 'WARNING', 0)])
>>> parse_stats("Decode batch. #running-req: 3, #token: 900, token usage: 0.97, gen throughput (token/s): 95.10, #queue-req: 4")
EngineStats(prompt_tps=None, gen_tps=95.1, running=3, waiting=4, swapped=0, kv_usage=0.97, per_request=False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field

from runwatch.models.base import DiagnosticConfig
from runwatch.models.findings import Severity
from runwatch.models.text.signatures import LogFinding

_NUM = r"(\d+(?:\.\d+)?)"
_PROMPT = re.compile(r"Avg prompt throughput:\s*" + _NUM + r" tokens/s")
_GEN = re.compile(r"(?:Avg generation throughput:\s*" + _NUM + r" tokens/s|gen throughput \(token/s\):\s*" + _NUM + ")")
_RUNNING = re.compile(r"(?:\bRunning:\s*(\d+) reqs|#running-req:\s*(\d+))")
_WAITING = re.compile(r"(?:\b(?:Waiting|Pending):\s*(\d+) reqs|#queue-req:\s*(\d+))")
_SWAPPED = re.compile(r"\bSwapped:\s*(\d+) reqs")
_KV_PERCENT = re.compile(r"GPU KV cache usage:\s*" + _NUM + "%")
_KV_FRACTION = re.compile(r"(?<![\w#])(?:full )?token usage:\s*" + _NUM)
_REQUEST_DECODE = re.compile(
    r"(?<!prompt )\beval time\s*=\s*[\d.]+ ms /\s*(\d+) (?:tokens|runs)\s*\(\s*[\d.]+ ms per token,\s*" + _NUM
    + r" tokens per second\)"
)


@dataclass(frozen=True, slots=True)
class EngineStats:
    """One stats line's numbers; ``prompt_tps`` is None where the engine does not print it (SGLang decode lines)."""

    prompt_tps: float | None
    gen_tps: float
    running: int
    waiting: int
    swapped: int
    kv_usage: float | None  # fraction in [0, 1]
    per_request: bool = False  # one finished request's timing (llama.cpp), not the engine's interval


def _request_timing(line: str) -> EngineStats | None:
    m = _REQUEST_DECODE.search(line)
    if m is None or int(m.group(1)) < 2:  # a one-token answer's "rate" is its first token's latency
        return None
    return EngineStats(None, float(m.group(2)), 1, 0, 0, None, per_request=True)


def _group(m: re.Match | None) -> str | None:
    if m is None:
        return None
    return next((g for g in m.groups() if g is not None), None)


def parse_stats(line: str) -> EngineStats | None:
    """The numbers of a vLLM or SGLang stats line or of a llama.cpp request's timing line, or None for any other line.

    >>> parse_stats("       eval time =   26581.48 ms /    10 tokens ( 2658.15 ms per token,     0.38 tokens per second)")
    EngineStats(prompt_tps=None, gen_tps=0.38, running=1, waiting=0, swapped=0, kv_usage=None, per_request=True)
    >>> parse_stats("prompt eval time =    7164.75 ms /  2029 tokens (    3.53 ms per token,   283.19 tokens per second)")
    """
    if "throughput" not in line:
        return _request_timing(line) if "tokens per second" in line else None
    gen, running = _group(_GEN.search(line)), _group(_RUNNING.search(line))
    if gen is None or running is None:
        return None
    prompt = _group(_PROMPT.search(line))
    waiting = _group(_WAITING.search(line))
    swapped = _group(_SWAPPED.search(line))
    kv = _group(_KV_PERCENT.search(line))
    kv_usage = float(kv) / 100.0 if kv is not None else None
    if kv_usage is None:
        frac = _group(_KV_FRACTION.search(line))
        kv_usage = float(frac) if frac is not None else None
    return EngineStats(
        None if prompt is None else float(prompt), float(gen), int(running),
        int(waiting or 0), int(swapped or 0), kv_usage,
    )


class EngineStatsConfig(DiagnosticConfig):
    """Thresholds of :class:`EngineStatsWatch`.

    Parameters
    ----------
    min_decode_rate
        Generation below this many tokens/s per running request is a stall. Default 1.0: GPU
        serving decodes at 10-100 tokens/s per request; the stall in the vLLM issue this was
        built from ran at 0.2.
    stall_intervals
        Consecutive stats lines a stall must last before it is a WARNING. Default 2.
    kv_full
        KV-cache usage (fraction) from which waiting requests are a capacity matter, not a hang.
        Default 0.95 (vLLM pre-empts near 100 %).
    """

    min_decode_rate: float = Field(default=1.0, ge=0.0)
    stall_intervals: int = Field(default=2, ge=1)
    kv_full: float = Field(default=0.95, gt=0.0, le=1.0)


_TITLES = {
    "decode_stall": (
        Severity.WARNING, "serving engine decoding far too slowly",
        "check GPU utilisation and clocks, whether the model fell back to CPU or eager mode, KV swapping or "
        "offload, and the engine's scheduler; compare with a single request on an idle server. Decoding that stops "
        "while prompts are prefilled: enable chunked prefill or lower max_num_batched_tokens",
    ),
    "queue_stalled": (
        Severity.WARNING, "requests waiting but none admitted",
        "the scheduler admits nothing although the KV cache has room: a stuck request or engine loop; look for "
        "one request that never finishes (max_tokens, a long generation), then restart the engine",
    ),
    "kv_cache_saturated": (
        Severity.INFO, "KV cache full with requests queued",
        "the server is at capacity: requests queue and may be pre-empted; add replicas, lower max_num_seqs or "
        "max_model_len, or raise gpu_memory_utilization",
    ),
}


class EngineStatsWatch:
    """Stall and saturation checks over one run's engine stats lines (see the module docstring)."""

    def __init__(self, config: EngineStatsConfig | None = None, max_evidence: int = 16) -> None:
        self.config = config or EngineStatsConfig()
        self.max_evidence = max_evidence
        # per condition: [first line index, evidence lines, consecutive intervals, reported]
        self._episodes: dict[str, list] = {}

    def feed(self, line: str, index: int) -> list[LogFinding]:
        """One log line (``index`` = its place in the run's line stream); findings it completes."""
        stats = parse_stats(line)
        if stats is None:
            return []
        out = []
        for name, holds in self._conditions(stats).items():
            if not holds:
                self._episodes.pop(name, None)
                continue
            ep = self._episodes.setdefault(name, [index, [], 0, False])
            ep[2] += 1
            if len(ep[1]) < self.max_evidence:
                ep[1].append(line)
            severity, title, hint = _TITLES[name]
            needed = self.config.stall_intervals if severity >= Severity.WARNING else 1
            if ep[2] >= needed and not ep[3]:
                ep[3] = True
                out.append(LogFinding(name, severity, ep[0], list(ep[1]), self._message(name, stats, ep[2]), title, hint))
        return out

    def _conditions(self, s: EngineStats) -> dict[str, bool]:
        cfg = self.config
        prefilling = s.prompt_tps is not None and s.prompt_tps > 0
        kv_full = s.kv_usage is not None and s.kv_usage >= cfg.kv_full
        return {
            "decode_stall": s.running > 0 and s.gen_tps / s.running < cfg.min_decode_rate
            and (not prefilling or s.gen_tps == 0),
            # nothing running at all is as stuck as no prompt admitted (vLLM counts a prompt being prefilled as running)
            "queue_stalled": s.waiting > 0 and (s.prompt_tps == 0 or s.running == 0) and not kv_full,
            "kv_cache_saturated": kv_full and (s.waiting > 0 or s.swapped > 0),
        }

    def _message(self, name: str, s: EngineStats, intervals: int) -> str:
        kv = f", KV cache {s.kv_usage:.0%}" if s.kv_usage is not None else ""
        if name == "decode_stall" and s.per_request:
            return (f"requests decoded at {s.gen_tps:g} tokens/s ({1000.0 / max(s.gen_tps, 1e-9):.0f} ms per token) "
                    f"in {intervals} timing lines in a row")
        if name == "decode_stall" and s.prompt_tps:
            return (f"0 tokens/s generated for {s.running} running request(s) over {intervals} stats intervals while "
                    f"prompts were prefilled at {s.prompt_tps:g} tokens/s: decoding waits on prefill")
        if name == "decode_stall":
            return (f"{s.gen_tps:g} tokens/s generated for {s.running} running request(s) "
                    f"({s.gen_tps / s.running:.2g} per request) over {intervals} stats intervals, no prefill")
        if name == "queue_stalled" and s.running == 0 and s.prompt_tps:
            return f"{s.waiting} request(s) waiting and none running over {intervals} stats intervals{kv}"
        if name == "queue_stalled":
            return f"{s.waiting} request(s) waiting and 0 prompt tokens/s over {intervals} stats intervals{kv}"
        return f"{s.waiting} waiting, {s.swapped} swapped, {s.running} running{kv}"

    def state_dict(self) -> dict:
        return {name: [ep[0], list(ep[1]), ep[2], ep[3]] for name, ep in self._episodes.items()}

    def load_state_dict(self, state: dict) -> None:
        self._episodes = {
            str(name): [int(ep[0]), [str(x) for x in ep[1]], int(ep[2]), bool(ep[3])]
            for name, ep in state.items() if name in _TITLES
        }
