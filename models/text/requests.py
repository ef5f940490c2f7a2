"""Request latency from an inference server's per-request log lines, in milliseconds.

A server that logs each request with its duration gives the latency detector
(:class:`~runwatch.models.diagnostics.deployment.LatencyDiagnostic`, which
watches ``latency_ms`` and ``latency_ms/<part>``) something to watch when the
deployment's only telemetry is its log. Read, with their own units:

- Hugging Face TGI's ``generate{... total_time="1.23s" validation_time="12µs"
  queue_time="45µs" inference_time="1.2s" time_per_token="61.5ms" ...}: ...
  Success``: ``latency_ms`` (end to end), ``latency_ms/queue`` and
  ``latency_ms/per_token`` (decode speed, which does not depend on the length
  of the answer);
- BentoML's access log ``(scheme=http,method=POST,...) (status=200,...)
  123.456ms (trace=...)`` and Ray Serve's ``__CALL__ OK 12.3ms``;
- KServe's latency logging (``predict_ms: 45.6`` beside ``preprocess_ms`` and ``postprocess_ms``: their sum as
  ``latency_ms``, the model's part as ``latency_ms/predict``);
- TorchServe's ``PredictionTime.Milliseconds:12.34|#ModelName:...`` (``PredictionTime.ms`` since 0.8) and
  its access log's inference requests (``ACCESS_LOG - /10.0.0.1:5000 "POST /predictions/m HTTP/1.1" 200 118``,
  the last field in ms);
- Gin's access log (Ollama and other Go servers): ``[GIN] 2024/06/01 - 10:00:00 | 200 |  1.234567s |
  127.0.0.1 | POST "/api/generate"`` (Go's durations, ``1m43s`` from a minute on);
- a request line (an HTTP method and path, a JSON access log's ``"method"`` and
  ``"path"``, or the word ``request``) with a ``key=value`` / ``key: value``
  duration: keys ending in ``_ms``/``_s``/``_us``, or ``latency``/``duration``/
  ``elapsed``/``took``/``response_time``/``request_time``/``time`` with a unit
  on the value (``812ms``, ``0.51s``) or, for nginx's ``request_time`` (``rt=``,
  ``urt=``) and an HTTP line's bare ``time``, seconds; a value followed by
  ``-``, ``:`` or ``/`` is a date or a clock time, not a duration; else
  ``finished in 1.2 seconds`` (or completed, processed, served, handled);
- ``POST /predict 200 45.23ms``: a method, a path, a status and a duration.

A line is one request: the extractor reports it at the next step of a running
counter, so the detector's baselines are over requests. A line that names its
route (:func:`request_route`: ``POST /v1/completions``, ``path=/api/generate``)
is reported per route by the extractor, ``latency_ms/<route>``: one server's
endpoints take milliseconds (embeddings, health checks) or seconds
(completions), and three slow requests in a row of one mixed series read as a
latency incident.

Examples
--------
>>> request_latency('10.0.0.7 "POST /v1/chat HTTP/1.1" status=200 duration_ms=812.3')
{'latency_ms': 812.3}
>>> request_latency('INFO generate{total_time="1.5s" queue_time="45.6µs" time_per_token="61.5ms"}: Success')
{'latency_ms': 1500.0, 'latency_ms/queue': 0.0456, 'latency_ms/per_token': 61.5}
>>> request_latency("iter 100: loss 2.3, time 120.5ms") is None  # not a request
True
"""

from __future__ import annotations

import math
import re

_NUM = r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_UNIT = r"(ms|s|µs|us|ns)?"
_SCALE = {"ms": 1.0, "s": 1000.0, "µs": 1e-3, "us": 1e-3, "ns": 1e-6}

_METHODS = ("GET /", "POST /", "PUT /", "PATCH /", "DELETE /", "HEAD /", "OPTIONS /")
_REQUEST_WORD = re.compile(r"\brequest(?:_?id)?\b|\breq_id\b", re.IGNORECASE)
_TGI = re.compile(r"\b(total_time|queue_time|time_per_token)=\"" + _NUM + _UNIT + r"\"")
_TGI_PART = {"total_time": "latency_ms", "queue_time": "latency_ms/queue", "time_per_token": "latency_ms/per_token"}
_BENTO = re.compile(r"\(scheme=\w+,method=\w+,.*?\) \(status=\d+,.*?\) " + _NUM + r"ms\b")
# KServe's latency logging (--enable_latency_logging): "requestId: .., preprocess_ms: .., explain_ms: .., predict_ms: ..,
# postprocess_ms: .."
_KSERVE = re.compile(r"\b(preprocess|explain|predict|postprocess)_ms:\s*" + _NUM)
_RAY = re.compile(r"\b__CALL__ (?:OK|ERROR) " + _NUM + r"ms\b")
# Go's time.Duration as gin prints it: "1.204511ms", "57.956598944s", and from a minute on "1m43s", "1h2m3s"
_GIN = re.compile(r"\[GIN\] .*?\|\s*\d{3}\s*\|\s*(?:(\d+)h)?(?:(\d+)m(?!s))?" + _NUM + r"(ms|s|µs|us|ns)\s*\|")
_TORCHSERVE = re.compile(r"\bPredictionTime\.(?:Milliseconds|ms):" + _NUM + r"\|")  # .ms since TorchServe 0.8
# TorchServe's access log: "<client> \"POST /predictions/m HTTP/1.1\" 200 118", the last field in ms; inference
# requests only (a management call like "POST /models?url=..." is not a prediction)
_TORCHSERVE_ACCESS = re.compile(
    r"ACCESS_LOG - \S+ \"[A-Z]+ (?:/predictions/|/v1/models/\S*:predict|/v2/models/\S*/infer)\S* HTTP/[\d.]+\" "
    r"\d{3} (\d+)\s*$"
)
# A duration key (matched on the lower-cased line at each place one of _DURATION_KEYS occurs), its unit suffix,
# then the value and its unit
# A value followed by "-", ":" or "/" is a date or a clock time ("time=2024-06-01T10:00:00Z"), not a duration.
_KEYED = re.compile(
    r"(latency|duration|elapsed|took|response_time|request_time|time_taken|time|u?rt)(_ms|_s|_sec|_seconds|_us)?"
    r"\"?\s*(?:[:=]\s*|\s)\"?" + _NUM + _UNIT + r"(?![\w.:/\-])"
)
_DURATION_KEYS = ("latency", "duration", "elapsed", "took", "time", "rt=")  # every _KEYED key contains one of these
_KEY_UNIT = {"_ms": "ms", "_s": "s", "_sec": "s", "_seconds": "s", "_us": "us"}
# nginx's $request_time (and its log_format example's rt= / urt=); "time: 0.25" on an HTTP request line
_SECONDS_WITHOUT_UNIT = ("request_time", "time", "rt", "urt")
# "POST /predict 200 45.23ms" (Morgan-style and custom middleware lines); "request 12 finished in 1.2 seconds"
# ... and Ray Serve's request log, whose status is a code or OK / ERROR / CANCELLED ("GET / CANCELLED 60001.2ms")
_METHOD_STATUS_TIME = re.compile(r"\b(?:GET|POST|PUT|PATCH|DELETE) /\S* (?:\d{3}|OK|ERROR|CANCELLED) " + _NUM + r" ?(ms|s)\b")
_DONE_IN = re.compile(r"\b(?:finished|completed|processed|served|handled) in " + _NUM
                      + r" ?(ms|milliseconds|s|sec|secs|seconds)\b", re.IGNORECASE)
_WORD_UNIT = {"milliseconds": "ms", "sec": "s", "secs": "s", "seconds": "s"}


# The path of a request line: after an HTTP method (quoted or not, Gin's `POST     "/api/generate"`), as a logfmt
# path= / uri= or a JSON "path" / "uri" / "url".
_ROUTE = re.compile(
    r"\b(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+\"?(/[^\s\"?#]*)|\b(?:path|uri)=(/[^\s,\"?#]*)|"
    r"\"(?:path|uri|url)\":\s*\"(?:https?://[^/\"]+)?(/[^\"?#]*)"
)
# Path segments that are ids, not routes: numbers, hex or uuid-like tokens, anything with 3+ digits in a row.
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{32,36})$|\d{3}")
ROUTE_SEGMENTS = 3


def request_route(line: str) -> str | None:
    """The route a request line names: its path's first segments, ids masked, or None.

    Examples
    --------
    >>> request_route('10.0.0.7 "POST /v1/completions HTTP/1.1" 200 rt=8.1')
    'v1/completions'
    >>> request_route('"GET /v2/54fadb412c4e40cdbaed9335e4c35a9e/servers/detail HTTP/1.1" status: 200 time: 0.25')
    'v2/:id/servers'
    >>> request_route("Request 123 finished in 1.23 seconds") is None
    True
    """
    m = _ROUTE.search(line)
    if m is None:
        return None
    path = m.group(1) or m.group(2) or m.group(3)
    parts = [":id" if _ID_SEGMENT.search(seg) else seg for seg in path.split("/") if seg][:ROUTE_SEGMENTS]
    return "/".join(parts) if parts else "root"


def request_latency(line: str) -> dict[str, float] | None:
    """The latencies (ms) a per-request log line reports, or None when it is not such a line.

    Only finite values: a garbled ``1e400s`` is no request that took forever (and no NONFINITE alert).
    """
    found = _read(line)
    if found is None:
        return None
    found = {k: v for k, v in found.items() if math.isfinite(v)}
    return found or None


def _read(line: str) -> dict[str, float] | None:
    if "[GIN]" in line:  # its durations may carry no word at all ("1.234567s")
        m = _GIN.search(line)
        if m is None:
            return None
        hours, minutes, value, unit = m.groups()
        return {"latency_ms": (int(hours or 0) * 60 + int(minutes or 0)) * 60_000.0 + float(value) * _SCALE[unit]}
    if "ACCESS_LOG" in line:  # TorchServe's: a bare number of milliseconds last
        m = _TORCHSERVE_ACCESS.search(line)
        return None if m is None else {"latency_ms": float(m.group(1))}
    # Every line read further down names a duration one of these ways ("12.3ms", "total_time", "PredictionTime", ...).
    if not ("ms" in line or "ime" in line or "atency" in line or "uration" in line or "lapsed" in line or "took" in line
            or "rt=" in line or "d in " in line):
        return None
    if 'total_time="' in line or 'time_per_token="' in line:  # TGI's spans: generate, generate_stream, chat_completions...
        found = {_TGI_PART[k]: float(v) * _SCALE[u or "s"] for k, v, u in _TGI.findall(line)}
        return found or None
    # Cheap substring tests first: most lines of a log are no request line at all.
    for marker, pattern in (("(scheme=", _BENTO), ("__CALL__", _RAY)):
        if marker in line:
            m = pattern.search(line)
            if m is not None:
                return {"latency_ms": float(m.group(1))}
    if "predict_ms:" in line:
        parts = {k: float(v) for k, v in _KSERVE.findall(line)}
        if "predict" in parts:
            return {"latency_ms": sum(parts.values()), "latency_ms/predict": parts["predict"]}
    if "PredictionTime" in line:
        m = _TORCHSERVE.search(line)
        return None if m is None else {"latency_ms/prediction": float(m.group(1))}
    http = (("HTTP/" in line and any(method in line for method in _METHODS)) or ("method=" in line and "path=/" in line)
            or ('"method"' in line and ('"path"' in line or '"uri"' in line or '"url"' in line)))  # JSON access logs
    if not http and not (("equest" in line or "EQUEST" in line or "req_id" in line) and _REQUEST_WORD.search(line)):
        if " /" not in line or not any(method in line for method in _METHODS):
            return None
        m = _METHOD_STATUS_TIME.search(line)
        if m is not None:
            return {"latency_ms": float(m.group(1)) * _SCALE[m.group(2)]}
        return _done_in(line)
    low = line.lower()
    for m in _duration_fields(low):
        key, key_unit, value, unit = m.group(1), m.group(2), m.group(3), m.group(4)
        unit = unit or _KEY_UNIT.get(key_unit or "")
        if unit is None and key in _SECONDS_WITHOUT_UNIT and (http or key == "request_time"):
            unit = "s"
        if unit is None:
            continue  # a bare number under a key that does not say its unit
        return {"latency_ms": float(value) * _SCALE[unit]}
    return _done_in(line)


def _done_in(line: str) -> dict[str, float] | None:
    m = _DONE_IN.search(line) if "d in " in line else None
    if m is None:
        return None
    unit = m.group(2).lower()
    return {"latency_ms": float(m.group(1)) * _SCALE[_WORD_UNIT.get(unit, unit)]}


def _duration_fields(low: str):
    """The :data:`_KEYED` matches in a lower-cased line, in order: the pattern is tried only where a key word starts
    (a word boundary before it), which costs far less than a case-insensitive scan of the whole line."""
    starts = set()
    for word in _DURATION_KEYS:
        i = low.find(word)
        while i >= 0:
            # the key may begin a few characters earlier ("response_time", "request_time", "time_taken")
            for start in (i - 9, i - 8, i):
                if start >= 0 and (start == 0 or not (low[start - 1].isalnum() or low[start - 1] == "_")):
                    starts.add(start)
            i = low.find(word, i + 1)
    for start in sorted(starts):
        m = _KEYED.match(low, start)
        if m is not None:
            yield m
