"""The demo's deployment: a text-generation server's router log, as Hugging Face TGI writes it.

One line per request, with its end-to-end, queue and per-token times. Answers vary in length, so the
end-to-end time swings; from request ``slow_from`` on, decoding takes about four times as long per token
(a throttled GPU, a noisy neighbour), which only the per-token time shows cleanly.

>>> lines = router_log(seed=0, requests=3)
>>> "time_per_token=" in lines[0] and lines[0].endswith("Success")
True
"""

from __future__ import annotations

import numpy as np

_LINE = (
    "2024-06-01T10:{minute:02d}:{second:02d}.{micro:06d}Z  INFO compat_generate{{default_return_full_text=true}}:"
    'generate{{parameters=GenerateParameters {{ max_new_tokens: Some({tokens}) }} total_time="{total:.3f}s" '
    'validation_time="{validation:.1f}µs" queue_time="{queue:.1f}µs" inference_time="{inference:.3f}s" '
    'time_per_token="{per_token:.2f}ms" seed="None"}}: text_generation_router::server: router/src/server.rs:305: Success'
)


def router_log(seed: int = 0, requests: int = 260, slow_from: int = 200) -> list[str]:
    """``requests`` router lines; decoding slows about 4x from request ``slow_from`` on."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(requests):
        tokens = int(rng.integers(20, 400))
        per_token = float(rng.normal(11.0, 0.8)) * (4.0 if i >= slow_from else 1.0)
        inference = per_token * tokens / 1000
        queue = float(rng.uniform(20.0, 90.0))
        validation = float(rng.uniform(80.0, 200.0))
        total = inference + (queue + validation) / 1e6
        t = 2 * i
        lines.append(_LINE.format(minute=t // 60 % 60, second=t % 60, micro=int(rng.integers(0, 10**6)), tokens=tokens,
                                  total=total, validation=validation, queue=queue, inference=inference,
                                  per_token=per_token))
    return lines
