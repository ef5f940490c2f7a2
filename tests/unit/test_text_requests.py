"""Request latency read from inference servers' per-request log lines (models/text/requests.py).

The lines follow each server's own log format (TGI's router span, BentoML's and Ray Serve's access logs,
TorchServe's model metrics, an OpenStack/nginx-style request line); the values are made up.
"""

from __future__ import annotations

import math

import numpy as np

import pytest

from runwatch.models.block import MetricBlock
from runwatch.models.findings import AnomalyKind, Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig
from runwatch.models.text.monitor import TextMonitor
from runwatch.models.text.requests import request_latency, request_route

TGI = ('2024-06-01T10:00:00.123456Z  INFO compat_generate{{default_return_full_text=true}}:generate{{parameters='
       'GenerateParameters {{ best_of: None, max_new_tokens: Some(200) }} total_time="{total}" validation_time="120µs" '
       'queue_time="{queue}" inference_time="2.1s" time_per_token="{per_token}" seed="None"}}: '
       'text_generation_router::server: router/src/server.rs:305: Success')


@pytest.mark.parametrize("line, expected", [
    (TGI.format(total="2.2s", queue="45.6µs", per_token="10.5ms"),
     {"latency_ms": 2200.0, "latency_ms/queue": 0.0456, "latency_ms/per_token": 10.5}),
    ("2024-06-01T10:00:00+0000 [INFO] [api_server:svc:1] 10.0.0.1:5000 (scheme=http,method=POST,path=/classify,"
     "type=application/json,length=12) (status=200,type=application/json,length=4) 23.456ms (trace=ab,span=cd,sampled=0)",
     {"latency_ms": 23.456}),
    ("INFO 2024-06-01 10:00:00,000 default_Model default_Model#ab [default#Model#cd] replica.py:123 - __CALL__ OK 12.3ms",
     {"latency_ms": 12.3}),
    ("2024-06-01T10:00:00,123 [INFO ] W-9000-resnet_1.0-stdout MODEL_METRICS - PredictionTime.Milliseconds:12.34|"
     "#ModelName:resnet,Level:Model|#hostname:ab,requestID:cd,timestamp:1717236000", {"latency_ms/prediction": 12.34}),
    ('2017-05-16 00:00:00.008 25746 INFO nova.osapi_compute.wsgi.server [req-38101a0b] 10.11.10.1 "GET /v2/servers/detail '
     'HTTP/1.1" status: 200 len: 1893 time: 0.2477829', {"latency_ms": 247.7829}),
    ("request_id=ab method=POST path=/v1/chat status=200 duration_ms=812.3", {"latency_ms": 812.3}),
    ('[GIN] 2024/06/01 - 10:00:00 | 200 |  1.234567s |       127.0.0.1 | POST     "/api/generate"', {"latency_ms": 1234.567}),
    ('[GIN] 2024/06/01 - 10:00:01 | 200 |   12.3456ms |       127.0.0.1 | GET      "/api/tags"', {"latency_ms": 12.3456}),
    # from a minute on gin prints Go's duration with minutes (and hours): the slowest requests must not be dropped
    ('[GIN] 2024/06/01 - 10:02:00 | 200 |         1m43s |       127.0.0.1 | POST     "/api/chat"', {"latency_ms": 103000.0}),
    ('[GIN] 2024/06/01 - 11:02:00 | 200 |     1h2m3.5s |       127.0.0.1 | POST     "/api/chat"', {"latency_ms": 3723500.0}),
    ('10.0.0.7 - "POST /generate HTTP/1.1" 200 took 1.5s', {"latency_ms": 1500.0}),
    # logfmt (Go servers): the time stamp is no duration, the latency is
    ("time=2024-06-01T10:00:00Z level=INFO msg=request method=POST path=/api/generate status=200 latency=1.234s",
     {"latency_ms": 1234.0}),
    # nginx with the rt= / urt= fields of its own log_format example (seconds)
    ('10.0.0.1 - - [01/Jun/2024:10:00:00 +0000] "POST /v1/chat/completions HTTP/1.1" 200 512 "-" "curl/8.0" '
     'rt=0.532 uct="0.000" uht="0.530" urt="0.531"', {"latency_ms": 532.0}),
    # a JSON access log; Morgan-style and custom middleware lines; "finished in"
    ('{"time": "2024-06-01T10:00:00Z", "method": "POST", "path": "/predict", "status": 200, "duration_ms": 45.2}',
     {"latency_ms": 45.2}),
    ("2024-06-01 10:00:00,000 - INFO - POST /predict 200 45.23ms", {"latency_ms": 45.23}),
    ("POST /predict 200 45.230 ms - 123", {"latency_ms": 45.23}),
    ("Request 123 finished in 1.23 seconds", {"latency_ms": 1230.0}),
    ("POST /generate completed in 532 ms", {"latency_ms": 532.0}),
    # KServe's latency logging: the parts' sum and the model's own part
    ("2024-06-01 10:00:00.000 1 kserve.trace requestId: 8f1c, preprocess_ms: 1.234, explain_ms: 0, predict_ms: 45.678, "
     "postprocess_ms: 0.5", {"latency_ms": 47.412, "latency_ms/predict": 45.678}),
    ("requestId=ab status=200 duration=12ms", {"latency_ms": 12.0}),
    # TGI's OpenAI-compatible spans
    ('2024-06-01T10:00:00.123456Z  INFO chat_completions{total_time="1.2s" validation_time="120µs" queue_time="45µs" '
     'inference_time="1.1s" time_per_token="20ms" seed="None"}: text_generation_router::server: Success',
     {"latency_ms": 1200.0, "latency_ms/queue": 0.045, "latency_ms/per_token": 20.0}),
    # TorchServe 0.8+: PredictionTime.ms, and the access log's last field (ms) on inference requests
    ("2023-11-11T19:48:33,368 [INFO ] W-9000-sdxl_1.0-stdout MODEL_METRICS - PredictionTime.ms:44223.53|"
     "#ModelName:sdxl,Level:Model|#hostname:ab,requestID:cd,timestamp:1699732113", {"latency_ms/prediction": 44223.53}),
    ('2023-11-11T19:48:37,462 [INFO ] W-9000-sdxl_1.0 ACCESS_LOG - /127.0.0.1:53046 "POST /v1/models/sdxl:predict '
     'HTTP/1.1" 200 86831', {"latency_ms": 86831.0}),
    ('2022-08-26T03:42:59,892 [INFO ] W-9001-resnet-18_1.0 ACCESS_LOG - /127.0.0.1:58782 "PUT /predictions/resnet-18 '
     'HTTP/1.1" 200 15', {"latency_ms": 15.0}),
])
def test_each_servers_request_line_gives_its_latency_in_ms(line, expected):
    got = request_latency(line)
    assert got.keys() == expected.keys() and all(math.isclose(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize("line", [
    "iter 100: loss 2.3, time 120.5ms",  # a training step, not a request
    'INFO:     10.0.0.7:51234 - "POST /predict HTTP/1.1" 200 OK',  # no duration
    "request_id=ab status=200 latency=812",  # a duration without a unit
    "Waiting for the next request, elapsed since start 12.5",
    "GET /x HTTP/1.1 status: 200 time: 1e999",  # garbled: no request takes forever
    # a time stamp, a clock time or a date under a duration word is none (it read as 2,024 s before)
    "time=2024-06-01T10:00:00Z level=INFO msg=request method=POST path=/api/generate status=200",
    "request 5 start_time=10:00:00 status=200",
    "Epoch 3 finished in 12.5 seconds",  # not a request
    # TorchServe's management API is no prediction
    ('2024-05-30T21:46:03,625 [INFO ] epollEventLoopGroup-3-2 ACCESS_LOG - /127.0.0.1:53514 "POST /models?url='
     'https://example.org/squeezenet1_1.mar HTTP/1.1" 405 0'),
])
def test_lines_without_a_request_latency_give_none(line):
    assert request_latency(line) is None


def test_a_text_only_deployment_whose_decoding_slows_down_gets_a_latency_alert():
    """A TGI router's log: 200 requests at ~10 ms per token, then decoding slows to ~40 ms per token (a GPU
    throttling, a noisy neighbour). Answers vary in length, so total time alone is noisy; the per-token time says it."""
    lines = []
    for i in range(260):
        per_token = (10.0 + (i % 7) * 0.3) if i < 200 else 40.0 + (i % 5)
        tokens = 20 + (i * 37) % 180
        lines.append(TGI.format(total=f"{per_token * tokens / 1000:.3f}s", queue=f"{30 + i % 11}µs",
                                per_token=f"{per_token:.2f}ms"))
    tm, monitor, alerts = TextMonitor("svc"), DiagnosticSuite(SuiteConfig()).monitor("svc"), []
    for k in range(0, len(lines), 10):
        events, _ = tm.observe_lines(lines[k : k + 10])
        alerts += monitor.observe_block(MetricBlock.from_values(
            [s for s, _ in events], [0.0] * len(events), [tuple(m) for _, m in events], [list(m.values()) for _, m in events]))
    latency = [a for a in alerts if a.finding.kind == AnomalyKind.LATENCY and a.finding.severity >= Severity.WARNING]
    assert latency and latency[0].finding.metric == "latency_ms/per_token", alerts
    assert 200 <= latency[0].finding.step <= 205
    assert all(a.finding.step >= 200 for a in alerts if a.finding.severity >= Severity.WARNING)


@pytest.mark.parametrize("line, route", [
    ('10.0.0.7 - - [01/Jun/2024:10:00:00 +0000] "POST /v1/completions HTTP/1.1" 200 51 "-" "py" rt=8.1', "v1/completions"),
    ('"GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/detail HTTP/1.1" status: 200 time: 0.25', "v2/:id/servers"),
    ('[GIN] 2024/06/01 - 10:00:00 | 200 |  1.23s |  127.0.0.1 | POST     "/api/generate"', "api/generate"),
    ("request_id=ab method=POST path=/v1/chat/completions?x=1 status=200 duration_ms=812.3", "v1/chat/completions"),
    ('{"method": "POST", "url": "http://host:8000/predict/12345", "status": 200, "duration_ms": 5}', "predict/:id"),
    ("GET / HTTP/1.1 status: 200 time: 0.001", "root"),
    ("Request 123 finished in 1.23 seconds", None),
])
def test_the_route_a_request_line_names(line, route):
    assert request_route(line) == route


def test_one_latency_series_per_route_so_mixed_endpoints_do_not_read_as_an_incident():
    """An LLM server's access log: embeddings in ~50 ms, completions in ~8 s (1 request in 10). In one series,
    three completions in a row were three 'spikes' of 100+ robust SDs; per route each has its own baseline."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3000):
        path, seconds = ("v1/completions", rng.lognormal(np.log(8.0), 0.5)) if rng.random() < 0.1 else \
            ("v1/embeddings", rng.lognormal(np.log(0.05), 0.3))
        lines.append(f'10.0.0.2 - - [01/Jun/2024:10:00:00 +0000] "POST /{path} HTTP/1.1" 200 512 "-" "py" rt={seconds:.3f}')
    tm, monitor, alerts = TextMonitor("svc"), DiagnosticSuite(SuiteConfig()).monitor("svc"), []
    names = set()
    for k in range(0, len(lines), 50):
        events, _ = tm.observe_lines(lines[k : k + 50])
        for step, metrics in events:
            names |= set(metrics)
            alerts += monitor.observe(step, 0.0, metrics)
    assert names == {"latency_ms/v1/completions", "latency_ms/v1/embeddings"}
    assert [a for a in alerts if a.finding.severity >= Severity.WARNING] == []


def test_routes_beyond_the_cap_share_one_series():
    from runwatch.models.text.extract import MAX_ROUTES, MetricExtractor

    x = MetricExtractor()
    out = [x.extract(f'"GET /r{chr(97 + i)}/x HTTP/1.1" status: 200 time: 0.01')[0][1] for i in range(MAX_ROUTES + 3)]
    assert [next(iter(m)) for m in out[MAX_ROUTES:]] == ["latency_ms/other"] * 3
    restored = MetricExtractor()
    restored.load_state_dict(x.state_dict())
    assert restored.routes == x.routes and len(x.routes) == MAX_ROUTES
