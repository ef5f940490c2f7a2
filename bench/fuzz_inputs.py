"""Hypothesis strategies for decoder fuzzing: what each of runwatch's decoders may be handed.

- :func:`batch_bytes`: serialized ``EventBatch`` for the gRPC ingest path and Kafka
  protobuf records: well-formed batches with awkward values (bad run ids, NaN,
  negative steps, unknown enums, hyperparameters nested past the limit), the
  same bytes mutated (bit flips, cuts, splices, fields with unknown numbers or
  the wrong wire type inside items, unterminated groups), and plain noise.
- :func:`kafka_records`: ``(value, headers)`` of ingest records: those bytes,
  or JSON written from a batch (proto or lowerCamelCase names) then mutated as
  a document (wrong types, unknown or misspelt keys, duplicate keys, deep
  nesting) or as text.
- :func:`import_cases`: ``{relative path: bytes}`` trees for the importers, from
  the real fixture logs (tests/fixtures/training_logs) with one file mutated.
- :func:`config_texts`: ``(kind, JSON text)`` of a ``SuiteConfig`` (the
  ``--diagnostics-config`` file), ``ServiceSettings`` or ``KafkaSettings``, mutated.

Every strategy shrinks and is deterministic under ``derandomize=True``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "training_logs"

RUN_IDS = st.sampled_from(["r1", "r2", "r3", "", "bad id", "x" * 129, "r\u00e9", "r1\n", "a/b@c"])
PROJECTS = st.sampled_from(["p", "", "alpha", "q" * 129])
METRIC_NAMES = st.sampled_from(["loss", "val/loss", "lr", "grad_norm", "", "bad name", "a\x00b", "m" * 300])
DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.7e9, 5e-324]),
)
STEPS = st.one_of(st.integers(-3, 40), st.sampled_from([-(2**63), 2**63 - 1, 2**53 + 1]))
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53), TEXT
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)


def nest(levels: int, leaf: object = 1) -> dict:
    """``levels`` objects inside each other."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


HYPERPARAMETERS = st.one_of(
    st.dictionaries(TEXT, JSON_VALUES, max_size=4),
    st.integers(1, 30).map(nest),  # around the nesting limit (16); protobuf builds at most ~32
    st.just({"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.999]}}),
)


@st.composite
def batches(draw):
    """An ``EventBatch`` with awkward but serializable values."""
    from runwatch.v1 import runs_pb2

    b = runs_pb2.EventBatch(sequence=draw(st.integers(0, 2**64 - 1)))
    for _ in range(draw(st.integers(0, 2))):
        start = b.starts.add(
            run_id=draw(RUN_IDS), project=draw(PROJECTS), kind=draw(st.integers(0, 4)), start_time=draw(DOUBLES),
            framework=draw(TEXT), tags=draw(st.lists(TEXT, max_size=3)),
        )  # fmt: skip
        start.hyperparameters.update(draw(HYPERPARAMETERS))
        if draw(st.booleans()):
            start.environment.update(draw(st.dictionaries(TEXT, TEXT, max_size=3)))
        for _ in range(draw(st.integers(0, 2))):
            start.architecture.layers.add(
                name=draw(TEXT), type=draw(st.sampled_from(["Linear", "ReLU", ""])),
                in_size=draw(st.integers(-2, 64)), out_size=draw(st.integers(-2, 64)),
                param_count=draw(st.integers(-2, 10_000)),
            )  # fmt: skip
    for _ in range(draw(st.integers(0, 6))):
        ev = b.events.add(run_id=draw(RUN_IDS), step=draw(STEPS), wall_time=draw(DOUBLES))
        ev.metrics.update(draw(st.dictionaries(METRIC_NAMES, DOUBLES, max_size=3)))
    for _ in range(draw(st.integers(0, 2))):
        b.logs.add(
            run_id=draw(RUN_IDS), time=draw(DOUBLES), level=draw(st.integers(0, 7)), text=draw(TEXT),
            step=draw(STEPS),
        )  # fmt: skip
    for _ in range(draw(st.integers(0, 2))):
        b.ends.add(run_id=draw(RUN_IDS), status=draw(st.integers(0, 6)), reason=draw(TEXT), end_time=draw(DOUBLES))
    return b


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def raw_field(draw) -> bytes:
    """One field on the wire: any number (known or not), any wire type, a fitting or broken payload."""
    number = draw(st.one_of(st.integers(1, 6), st.sampled_from([0, 15, 16, 99, 2**29 - 1])))
    wire = draw(st.integers(0, 7))
    tag = _varint(number << 3 | wire)
    if wire == 0:
        return tag + _varint(draw(st.integers(0, 2**64 - 1)))
    if wire == 1:
        return tag + draw(st.binary(min_size=8, max_size=8))
    if wire == 5:
        return tag + draw(st.binary(min_size=4, max_size=4))
    if wire == 2:
        payload = draw(st.binary(max_size=12))
        length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32)))
        return tag + _varint(length) + payload
    if wire == 3:  # a group, closed or not
        body = draw(st.binary(max_size=6))
        return tag + body + (_varint(number << 3 | 4) if draw(st.booleans()) else b"")
    return tag + draw(st.binary(max_size=4))


def _items(raw: bytes) -> list[tuple[int, int, int]]:
    """``(tag byte, start, stop)`` of the length-delimited top-level fields of a well-formed batch."""
    out, pos = [], 0
    while pos < len(raw):
        tag = raw[pos]
        length, shift, p = 0, 0, pos + 1
        if tag & 7 != 2:
            while raw[p] & 0x80:
                p += 1
            pos = p + 1
            continue
        while True:
            byte = raw[p]
            length |= (byte & 0x7F) << shift
            p += 1
            shift += 7
            if byte < 0x80:
                break
        out.append((tag, p, p + length))
        pos = p + length
    return out


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` after 1-4 edits."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate", "field", "item_field"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and buf:
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[min(pos, len(buf) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xC3, 0xFF, 0x08, 0x12]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "duplicate":
            end = min(len(buf), pos + draw(st.integers(1, 16)))
            buf[end:end] = buf[pos:end]
        elif op == "field":
            buf += draw(raw_field())
        elif op == "item_field":
            # A field inside one item (an event's step as a string, say), the item re-framed to fit.
            try:
                items = _items(bytes(buf))
            except IndexError:
                items = []
            if items:
                tag, start, stop = items[draw(st.integers(0, len(items) - 1))]
                body = bytes(buf[start:stop]) + draw(raw_field())
                head = start - 1
                while head > 0 and buf[head - 1] & 0x80:
                    head -= 1
                buf[head - 1 : stop] = bytes([tag]) + _varint(len(body)) + body
    return bytes(buf)


@st.composite
def batch_bytes(draw) -> bytes:
    """Serialized ``EventBatch``: well-formed, mutated, or noise."""
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=64))
    raw = draw(batches()).SerializeToString()
    return raw if kind == "valid" else draw(mutated(raw))


# -- JSON documents ----------------------------------------------------------------------------


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


ODD_VALUES = ["abc", "NaN", "1.5", 1.5, True, -1, 2**70, "\ud800"]
ODD_KEYS = ["stepp", "runID", "wallTime", "metrics", "extra", "hyperparameters"]


@st.composite
def mutated_document(draw, doc):
    """``doc`` (parsed JSON) after 1-3 structural edits."""
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "rename", "deepen"]))
        if not path:
            if op == "replace":
                doc = draw(JSON_VALUES)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = draw(st.one_of(JSON_VALUES, st.sampled_from(ODD_VALUES)))
        elif op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(ODD_KEYS))] = draw(JSON_VALUES)
        elif op == "rename" and isinstance(parent, dict):
            value = parent.pop(key)
            renamed = [str(key) + "x", str(key).upper(), str(key)[:-1] or "k", "run_id", "runId"]
            parent[draw(st.sampled_from(renamed))] = value
        elif op == "deepen":
            parent[key] = nest(draw(st.integers(1, 60)), parent[key])
    return doc


def _duplicate_key(text: str, at: int, key: str) -> str:
    """``text`` with ``"key": 1,`` written first into its ``at``-th non-empty object (a repeated key if it has one)."""
    opens = [i for i, ch in enumerate(text) if ch == "{" and text[i + 1 : i + 2] != "}"]
    if not opens:
        return text
    i = opens[at % len(opens)]
    return f"{text[: i + 1]}{json.dumps(key)}: 1, {text[i + 1 :]}"


@st.composite
def json_record(draw) -> bytes:
    from google.protobuf import json_format

    b = draw(batches())
    try:
        doc = json_format.MessageToDict(b, preserving_proto_field_name=draw(st.booleans()))
    except (ValueError, json_format.SerializeToJsonError):
        doc = {"events": [{"run_id": "r1", "step": 1, "metrics": {"loss": 1.0}}]}
    if draw(st.integers(0, 3)):
        doc = draw(mutated_document(doc))
    text = json.dumps(doc, allow_nan=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from(["step", "run_id", "runId", "events", "loss"]))
        text = _duplicate_key(text, draw(st.integers(0, 9)), key)
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        raw = draw(mutated(raw))
    return raw


CONTENT_TYPES = [
    None,
    b"application/json",
    b"application/x-protobuf; messageType=runwatch.v1.EventBatch",
    b"application/x-protobuf; messageType=runwatch.v1.RunStart",
    b"application/octet-stream",
    b"text/csv",
    b"",
    b"\xff\xfe",
]


@st.composite
def kafka_records(draw) -> tuple[bytes, list[tuple[str, bytes]]]:
    """An ingest record: ``(value, headers)``."""
    value = draw(st.one_of(json_record(), batch_bytes()))
    ct = draw(st.sampled_from([*CONTENT_TYPES, None, None, None, None]))
    headers = [] if ct is None else [("content-type", ct)]
    if draw(st.integers(0, 5)) == 0:
        headers.append((draw(st.sampled_from(["x-trace", "Content-Type"])), draw(st.binary(max_size=8))))
    return value, headers


# -- importers ---------------------------------------------------------------------------------

_SEEDS = {
    "hf": ["hf/lora_imdb_distilbert/trainer_state.json"],
    "lightning": ["lightning/camels_ch_version_0/metrics.csv", "lightning/camels_ch_version_0/hparams.yaml"],
    "csv": ["long/modded_nanogpt_slice.csv"],
    "jsonl": ["long/modded_nanogpt_slice.jsonl"],
    "tensorboard": ["tensorboard/vae_mirt_version_4"],
    "mlflow": ["mlflow_mlruns"],
}
_CUT = 2500  # long files are cut to their first lines: each case stays cheap


@cache
def import_seeds() -> dict[str, dict[str, bytes]]:
    """Per format, its seed tree ``{relative path: bytes}`` from the fixture logs."""
    seeds = {}
    for fmt, roots in _SEEDS.items():
        tree = {}
        for root in roots:
            path = FIXTURES / root
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for f in files:
                data = f.read_bytes()
                if fmt in ("csv", "jsonl") and len(data) > _CUT:
                    data = data[: data.rindex(b"\n", 0, _CUT) + 1]
                tree[f.relative_to(FIXTURES).as_posix()] = data
        seeds[fmt] = tree
    return seeds


@st.composite
def import_cases(draw) -> tuple[str, dict[str, bytes]]:
    """``(format, tree)``: a fixture log tree with one of its files mutated."""
    fmt = draw(st.sampled_from(sorted(_SEEDS)))
    tree = dict(import_seeds()[fmt])
    name = draw(st.sampled_from(sorted(tree)))
    if draw(st.integers(0, 3)) == 0 and name.endswith(".json"):
        try:
            doc = draw(mutated_document(json.loads(tree[name])))
            tree[name] = json.dumps(doc).encode("utf-8", "surrogatepass")
        except ValueError:
            pass
    else:
        tree[name] = draw(mutated(tree[name]))
    return fmt, tree


# -- configuration files -----------------------------------------------------------------------


@cache
def config_seeds() -> dict[str, list[dict]]:
    from runwatch.models.registry import SuiteConfig
    from runwatch.service.kafka.config import KafkaSettings

    suite = SuiteConfig().model_dump(mode="json")
    tuned = {
        "enabled": ["nonfinite", "loss_spike", "plateau"],
        "settings": {"loss_spike": {"z_threshold": 8.0}, "plateau": {}},
        "policy": {"cooldown_steps": 100},
    }
    kafka = KafkaSettings(bootstrap="127.0.0.1:9092").model_dump(mode="json")
    kafka["sasl_password"] = ""
    service = {"port": 0, "host": "127.0.0.1", "data_dir": "/tmp/runwatch-fuzz", "max_batch_bytes": 1 << 20,
               "diagnostics": tuned, "kafka": kafka}  # fmt: skip
    return {"suite": [suite, tuned], "kafka": [kafka], "service": [service]}


@st.composite
def config_texts(draw) -> tuple[str, str]:
    """``(kind, JSON text)``: kind is ``suite``, ``service`` or ``kafka``."""
    kind = draw(st.sampled_from(["suite", "suite", "service", "kafka"]))
    doc = json.loads(json.dumps(draw(st.sampled_from(config_seeds()[kind]))))
    if draw(st.integers(0, 4)):
        doc = draw(mutated_document(doc))
    text = json.dumps(doc)
    if draw(st.integers(0, 5)) == 0:
        text = draw(mutated(text.encode())).decode("utf-8", "replace")
    return kind, text
