"""What every decoder must do with any input: the properties decoder fuzzing checks, one function per decoder.

Each ``check_*`` feeds one input to a decoder and returns its outcome: ``"accepted"``
or the kind of refusal (``"undecodable"``, ``"items rejected"``, ``"ImportFormatError"``,
``"ValidationError"``...). It raises :class:`PropertyFailure` when a property
breaks and lets any other exception through (a crash). The properties:

1. No exception but the decoder's documented refusal: an acknowledgement's
   violations (gRPC), a ``DecodeFailure`` or a dead letter (Kafka),
   ``ImportFormatError`` (importers), pydantic's ``ValidationError`` (configs).
2. Every refusal names a field (a violation's field path, an import error's file
   and position, a validation error's location) and gives its reason on one line.
3. A valid batch beside an invalid one loses nothing: valid batches sent just
   before and after each input (on the same stream, or as the records around it)
   are accepted whole.

Regression cases (``tests/fixtures/fuzz_regressions/cases.json``) are inputs that
once failed; :func:`replay` runs one through its check, and its expectations.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REGRESSIONS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fuzz_regressions" / "cases.json"

# A field path: an item list with its index, the batch's own fields, or the batch as a whole.
_FIELD = re.compile(r"(starts|events|logs|ends)\[\d+\](\..+|\[.+)?|sequence|batch|<field \d+>")
_KAFKA_FIELD = re.compile(rf"{_FIELD.pattern}|value|header content-type|(starts|events|logs|ends)(\..+)?")


class PropertyFailure(AssertionError):
    """A decoder broke one of the properties (not a crash: it answered, but wrongly)."""


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise PropertyFailure(message)


def _one_line(text: str) -> bool:
    return "\n" not in text and "\r" not in text


_keepers = itertools.count()


def _keeper_batches(run_id: str) -> tuple[bytes, bytes]:
    """A valid batch opening ``run_id`` with one event, and one with its next event and its end."""
    from runwatch.v1 import runs_pb2

    first = runs_pb2.EventBatch(sequence=1, starts=[runs_pb2.RunStart(run_id=run_id, project="fuzz-keepers")])
    first.events.add(run_id=run_id, step=0).metrics["loss"] = 1.0
    last = runs_pb2.EventBatch(sequence=3, ends=[runs_pb2.RunEnd(run_id=run_id)])
    last.events.add(run_id=run_id, step=1).metrics["loss"] = 0.5
    return first.SerializeToString(), last.SerializeToString()


def _fuzz_settings(data_dir: Path):
    from runwatch.models.registry import SuiteConfig
    from runwatch.service.settings import ServiceSettings

    # Decoding is what is fuzzed: one cheap diagnostic keeps each case fast.
    return ServiceSettings(
        port=0, data_dir=data_dir, diagnostics=SuiteConfig(enabled=["nonfinite"]), max_batch_bytes=1 << 20
    )


def _unlocated(field: str, reason: str) -> bool:
    """An undecodable batch named only as a whole: the locator found nothing the parser refused."""
    return field == "batch" and reason.startswith("not a valid")


def _check_violations(violations, what: str) -> str:
    """Every violation named and on one line; the outcome of a refused input."""
    for v in violations:
        field, reason = (v.field, v.reason) if hasattr(v, "field") else v
        ensure(bool(field) and bool(reason), f"{what}: violation without field or reason: {field!r}: {reason!r}")
        ensure(_FIELD.fullmatch(field) is not None, f"{what}: {field!r} is not a field path ({reason})")
        ensure(_one_line(reason), f"{what}: reason on several lines: {reason!r}")
        ensure("internal error" not in reason, f"{what}: {field}: {reason}")
        ensure(not _unlocated(field, reason), f"{what}: undecodable, not located: {reason}")
    return "ok"


def _ack_outcome(ack) -> str:
    if not ack.rejected:
        return "duplicates" if ack.duplicates and not ack.accepted else "accepted"
    if ack.rejected == 1 and not ack.accepted and "none of it was read" in ack.violations[0].reason:
        return "undecodable"
    if ack.violations and "over the limit" in ack.violations[0].reason:
        return "too large"
    return "items rejected"


# -- gRPC ingest -------------------------------------------------------------------------------


class GrpcIngest:
    """A real runwatch server on loopback, and raw ``StreamEvents`` calls to it (bytes in, acks out)."""

    def __init__(self, data_dir: Path) -> None:
        import grpc

        from runwatch.service.background import BackgroundServer
        from runwatch.v1 import service_pb2

        self.server = BackgroundServer(_fuzz_settings(data_dir)).start()
        self.channel = grpc.insecure_channel(self.server.target)
        self._stream = self.channel.stream_stream(
            "/runwatch.v1.IngestService/StreamEvents",
            request_serializer=None,
            response_deserializer=service_pb2.IngestAck.FromString,
        )

    def send(self, raws: list[bytes]) -> list:
        self.last = list(self._stream(iter(raws), timeout=60))
        return self.last

    def close(self) -> None:
        self.channel.close()
        self.server.stop()


def check_grpc(target: GrpcIngest, raw: bytes) -> str:
    """``raw`` on a stream between two valid batches of another run."""
    first, last = _keeper_batches(f"keeper-{next(_keepers)}")
    acks = target.send([first, raw, last])
    ensure(len(acks) == 3, f"{len(acks)} acks for 3 batches: the stream ended")
    ensure((acks[0].accepted, acks[0].rejected) == (2, 0), f"valid batch before the input lost items: {acks[0]}")
    ensure((acks[2].accepted, acks[2].rejected) == (2, 0), f"valid batch after the input lost items: {acks[2]}")
    ack = acks[1]
    ensure(ack.rejected >= min(len(ack.violations), 100), f"violations without rejections: {ack}")
    _check_violations(ack.violations, "gRPC ack")
    for w in ack.warnings:
        ensure(_one_line(w), f"warning on several lines: {w!r}")
    return _ack_outcome(ack)


# -- Kafka records -----------------------------------------------------------------------------


class KafkaIngest:
    """The detector consumer's per-record path (decode, ingest) on an in-process pipeline; no broker."""

    def __init__(self, data_dir: Path) -> None:
        from runwatch.service.pipeline import DetectionPipeline
        from runwatch.service.store import RunStore

        settings = _fuzz_settings(data_dir)
        self.max_bytes = settings.max_batch_bytes
        self.pipeline = DetectionPipeline(settings, RunStore(settings.db_path))

    def process(self, value: bytes, headers: list[tuple[str, bytes]]):
        """``(outcome, violations, ack)`` of one record, as the consumer handles it (dead letters built too)."""
        from runwatch.service.kafka import codecs
        from runwatch.service.kafka.consumer import DetectorConsumer
        from runwatch.service.kafka.dead_letters import dead_letter

        rec = SimpleNamespace(topic="fuzz", partition=0, offset=0, timestamp=0, key=b"k", value=value, headers=headers)
        fmt = codecs.batch_format(value, headers)
        if isinstance(fmt, codecs.DecodeFailure):
            outcome, failure, ack = "bad content type" if fmt.field.startswith("header") else "undecodable", fmt, None
        else:
            ingested = DetectorConsumer._ingest(SimpleNamespace(pipeline=self.pipeline), rec, fmt, time.perf_counter())
            if isinstance(ingested, codecs.DecodeFailure):
                outcome, failure, ack = "undecodable", ingested, None
            else:
                failure, ack = None, ingested[0].ack
                outcome = _ack_outcome(ack)
        violations = [(failure.field, failure.reason)] if failure else [(v.field, v.reason) for v in ack.violations]
        if violations:
            letter = dead_letter("fuzz.dlq", rec, outcome, violations, ack.accepted if ack else 0)
            for name, header_value in letter.headers:
                if name.startswith("runwatch-dlq"):  # the record's own headers are kept as they came
                    ensure(_one_line((header_value or b"").decode("utf-8", "replace")),
                           f"dead-letter header {name} on several lines: {header_value!r}")  # fmt: skip
        return outcome, violations, ack

    def close(self) -> None:
        self.pipeline.store.close()


def check_kafka(target: KafkaIngest, value: bytes, headers: list[tuple[str, bytes]]) -> str:
    """An ingest record between two valid records (JSON before, protobuf after) of another run."""
    from google.protobuf import json_format

    from runwatch.v1 import runs_pb2

    first, last = _keeper_batches(f"keeper-{next(_keepers)}")
    first_json = json_format.MessageToJson(runs_pb2.EventBatch.FromString(first)).encode()
    before = target.process(first_json, [])
    outcome, violations, ack = target.last = target.process(value, headers)
    after = target.process(last, [("content-type", b"application/x-protobuf; messageType=runwatch.v1.EventBatch")])
    ensure(before[0] == "accepted" and before[2].accepted == 2, f"valid record before the input lost items: {before}")
    ensure(after[0] == "accepted" and after[2].accepted == 2, f"valid record after the input lost items: {after}")
    for field, reason in violations:
        ensure(bool(field) and bool(reason), f"Kafka: violation without field or reason: {field!r}: {reason!r}")
        ensure(
            _KAFKA_FIELD.fullmatch(field) is not None or "has no field named" in reason,  # an unknown key, as given
            f"Kafka: {field!r} is not a field path ({reason})",
        )
        ensure(_one_line(reason), f"Kafka: reason on several lines: {reason!r}")
        ensure("internal error" not in reason, f"Kafka: {field}: {reason}")
        ensure(not _unlocated(field, reason), f"Kafka: undecodable, not located: {reason}")
    return outcome


# -- importers ---------------------------------------------------------------------------------


def check_import(fmt: str, tree: dict[str, bytes]) -> str:
    """Read a log tree with the importers: runs well-formed, or an ``ImportFormatError`` naming file and position."""
    from runwatch.client.importers import ImportFormatError, load

    with tempfile.TemporaryDirectory(prefix="runwatch-fuzz-") as tmp:
        root = Path(tmp)
        for rel, data in tree.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        first = Path(next(iter(tree)))
        target = root / first if fmt in ("csv", "jsonl") else root / first.parts[0]
        try:
            runs = load(target, fmt if fmt in ("csv", "jsonl") else "auto")
        except ImportFormatError as exc:
            ensure(bool(exc.position) and bool(exc.reason), f"import error without position or reason: {exc}")
            ensure(exc.path.startswith(tmp), f"import error names no file of the input: {exc.path!r}")
            ensure(_one_line(exc.position), f"import error position on several lines: {exc.position!r}")
            return "ImportFormatError"
    for run in runs:
        ensure(run.steps == sorted(set(run.steps)), f"{run.name}: steps not strictly increasing")
        ensure(len(run.steps) == len(run.wall_times) == len(run.metrics), f"{run.name}: columns of unequal length")
        ensure(all(run.metrics) and all(s >= 0 for s in run.steps), f"{run.name}: empty event or negative step")
        ensure(all(isinstance(v, float) for m in run.metrics for v in m.values()), f"{run.name}: non-float value")
    return "accepted"


# -- configuration files -----------------------------------------------------------------------


def _field_names(model) -> set[str]:
    from pydantic import BaseModel

    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                names |= _field_names(arg)
    return names


# Errors about the document as a whole: not JSON (the message gives line and column), or not an object.
_WHOLE_DOCUMENT = {"json_invalid", "model_type", "model_attributes_type", "dict_type"}


def check_config(kind: str, text: str) -> str:
    """A config file's JSON: a usable config, or a ``ValidationError`` whose every error names a field."""
    from pydantic import ValidationError

    from runwatch.models.registry import DiagnosticSuite, SuiteConfig
    from runwatch.service.kafka.config import KafkaSettings
    from runwatch.service.settings import ServiceSettings

    model = {"suite": SuiteConfig, "service": ServiceSettings, "kafka": KafkaSettings}[kind]
    try:
        config = model.model_validate_json(text)
    except ValidationError as exc:
        names = _field_names(model)
        for error in exc.errors():
            named = bool(error["loc"]) or error["type"] in _WHOLE_DOCUMENT or any(n in error["msg"] for n in names)
            ensure(named, f"{kind}: validation error naming no field: {error['msg']}")
        return "ValidationError"
    suite = config if kind == "suite" else config.diagnostics if kind == "service" else None
    if suite is not None:
        DiagnosticSuite(suite).monitor("fuzz")
    kafka = config if kind == "kafka" else config.kafka if kind == "service" else None
    if kafka is not None:
        from kafka.producer.record_accumulator import RecordAccumulator

        options = kafka.producer_options()
        # What `serve` starts: kafka-python must accept every producer setting a config is accepted with.
        RecordAccumulator(**{k: options[k] for k in ("linger_ms", "request_timeout_ms", "delivery_timeout_ms")})
        kafka.consumer_config()
    return "accepted"


# -- regression cases --------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode_case(decoder: str, args: tuple, name: str, why: str, expect: dict | None = None) -> dict:
    """A JSON-ready regression case for ``decoder`` with input ``args``."""
    if decoder == "grpc":
        data = {"raw": _b64(args[0])}
    elif decoder == "kafka":
        data = {"value": _b64(args[0]), "headers": [[k, _b64(v or b"")] for k, v in args[1]]}
    elif decoder == "importer":
        data = {"format": args[0], "files": {k: _b64(v) for k, v in args[1].items()}}
    else:
        data = {"kind": args[0], "text": args[1]}
    case = {"decoder": decoder, "name": name, "why": why, "input": data}
    if expect:
        case["expect"] = expect
    return case


def decode_case(case: dict) -> tuple:
    data = case["input"]
    d = case["decoder"]
    if d == "grpc":
        return (base64.b64decode(data["raw"]),)
    if d == "kafka":
        return base64.b64decode(data["value"]), [(k, base64.b64decode(v)) for k, v in data["headers"]]
    if d == "importer":
        return data["format"], {k: base64.b64decode(v) for k, v in data["files"].items()}
    return data["kind"], data["text"]


def load_cases(path: Path = REGRESSIONS) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def save_case(case: dict, path: Path = REGRESSIONS) -> bool:
    """Add ``case`` unless an identical input is kept already; whether it was added."""
    cases = load_cases(path)
    if any(c["decoder"] == case["decoder"] and c["input"] == case["input"] for c in cases):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*cases, case], indent=1, ensure_ascii=True) + "\n")
    return True


def replay(case: dict, grpc_target: GrpcIngest | None, kafka_target: KafkaIngest | None) -> str:
    """Run a regression case through its check and its expectations; returns the outcome."""
    args = decode_case(case)
    d = case["decoder"]
    expect = case.get("expect", {})
    if d == "grpc":
        outcome = check_grpc(grpc_target, *args)
        found = [(v.field, v.reason) for v in grpc_target.last[1].violations]
    elif d == "kafka":
        outcome = check_kafka(kafka_target, *args)
        found = kafka_target.last[1]
    elif d == "importer":
        outcome, found = check_import(*args), []
    else:
        outcome, found = check_config(*args), []
    if "outcome" in expect:
        ensure(outcome == expect["outcome"], f"{case['name']}: outcome {outcome!r}, expected {expect['outcome']!r}")
    if "field" in expect:
        ensure(bool(found) and found[0][0] == expect["field"], f"{case['name']}: first violation {found[:1]}")
    if "reason" in expect:
        ensure(bool(found) and expect["reason"] in found[0][1], f"{case['name']}: first violation {found[:1]}")
    return outcome
