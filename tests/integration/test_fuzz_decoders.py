"""Every decoder fuzzed on a fixed budget (deterministic, a few seconds each), plus the inputs that once failed.

Properties and inputs are bench/fuzz_checks.py and bench/fuzz_inputs.py (the long run,
≥ 10,000 cases, is ``python -m bench.fuzz_decoders``): no exception but the documented
refusal, every refusal names a field, and valid batches sent around a bad input lose nothing.
gRPC cases go to a real server over loopback.
"""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings

from bench import fuzz_checks as checks
from bench import fuzz_inputs as inputs
from runwatch.service.kafka import codecs
from runwatch.service.nesting import too_deep

# Fixed and deterministic: the same 200 cases per decoder on every CI run.
CI = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip


@pytest.fixture(scope="module")
def grpc_target(tmp_path_factory):
    target = checks.GrpcIngest(tmp_path_factory.mktemp("fuzz-grpc"))
    yield target
    target.close()


@pytest.fixture(scope="module")
def kafka_target(tmp_path_factory):
    target = checks.KafkaIngest(tmp_path_factory.mktemp("fuzz-kafka"))
    yield target
    target.close()


@CI
@given(raw=inputs.batch_bytes())
def test_grpc_ingest_takes_any_bytes(grpc_target, raw):
    checks.check_grpc(grpc_target, raw)


@CI
@given(record=inputs.kafka_records())
def test_kafka_records_of_any_shape(kafka_target, record):
    checks.check_kafka(kafka_target, *record)


@CI
@given(batch=inputs.batches())
def test_json_written_by_json_format_reads_back_the_same(batch):
    try:
        text = json_format.MessageToJson(batch)
    except (ValueError, json_format.SerializeToJsonError):
        return  # not writable as JSON (nothing to read back)
    decoded = codecs.decode_batch(text.encode())
    assert not isinstance(decoded, codecs.DecodeFailure), decoded

    for ours, theirs in zip(decoded.starts, batch.starts):
        deep = too_deep(theirs.hyperparameters, "hyperparameters")
        assert too_deep(ours.hyperparameters, "hyperparameters") == deep  # cut below, still refused by the same path
        if deep:
            ours.ClearField("hyperparameters")
            theirs.ClearField("hyperparameters")
    # As dicts: NaN is written "NaN" there, so equal batches compare equal.
    assert json_format.MessageToDict(decoded) == json_format.MessageToDict(batch)


@CI
@given(case=inputs.import_cases())
def test_importers_on_mutated_logs(case):
    checks.check_import(*case)


@CI
@given(case=inputs.config_texts())
def test_config_files(case):
    checks.check_config(*case)


@pytest.mark.parametrize("case", checks.load_cases(), ids=lambda c: f"{c['decoder']}: {c['name']}")
def test_inputs_that_once_failed(case, grpc_target, kafka_target):
    checks.replay(case, grpc_target, kafka_target)
