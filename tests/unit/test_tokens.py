"""Token file, scopes of every RPC, and the project screen of ingested batches (no server)."""

from __future__ import annotations

import doctest
import importlib
import json
import logging

import pytest

from runwatch.service.auth import METHOD_SCOPES, required_scope
from runwatch.service.ingest_access import ProjectScreen
from runwatch.service.tokens import (
    TokenFileError,
    TokenStore,
    create_token,
    read_token_file,
    revoke_token,
)
from runwatch.v1 import runs_pb2, service_pb2

MODULES = [
    "runwatch.service.tokens",
    "runwatch.service.auth",
    "runwatch.service.tls",
    "runwatch.service.ingest_access",
    "runwatch.client.connection",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_every_rpc_of_the_protos_has_a_scope():
    methods = [
        f"/{service.full_name}/{method.name}"
        for service in service_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert sorted(methods) == sorted(METHOD_SCOPES)
    assert required_scope("/runwatch.v1.RunService/DeleteRun") == "admin"  # a new RPC is closed by default


def test_store_authenticates_by_hash_and_follows_the_file(tmp_path, caplog):
    path = tmp_path / "tokens.json"
    first, rec = create_token(path, projects=["alpha"], scopes=["ingest"])
    store = TokenStore(path)
    assert store.authenticate(f"Bearer {first}").token_id == rec.id
    assert store.authenticate(f"bearer {first}") is not None  # the scheme is case-insensitive
    other_last = "B" if first.endswith("A") else "A"
    for bad in (None, "", first, f"Basic {first}", f"Bearer {first}x", f"Bearer {first[:-1]}{other_last}"):
        assert store.authenticate(bad) is None
    second, _ = create_token(path, projects=["*"], scopes=["read"])
    assert store.authenticate(f"Bearer {second}") is not None  # picked up without a reload call
    principal = store.authenticate(f"Bearer {first}")
    assert store.still_valid(principal)
    with caplog.at_level(logging.ERROR, logger="runwatch.service.auth"):
        path.write_text('{"format": "runwatch.tokens/1", "tokens": [{"id": "zz"}]}')
        assert store.authenticate(f"Bearer {first}") is not None  # a bad version keeps the last good one
        assert store.authenticate(f"Bearer {first}") is not None
    assert sum("tokens.0.id" in r.message for r in caplog.records) == 1  # logged once, not per call
    path.unlink()
    create_token(path, projects=["alpha"], scopes=["ingest"])
    assert store.authenticate(f"Bearer {first}") is None and not store.still_valid(principal)


def test_token_file_errors_name_the_field(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"format": "runwatch.tokens/1", "tokens": [{"id": "0123456789ab"}]}))
    with pytest.raises(TokenFileError, match="tokens.0.sha256"):
        TokenStore(path)
    path.write_text("[]")
    with pytest.raises(TokenFileError, match=str(path)):
        read_token_file(path)
    with pytest.raises(TokenFileError, match="projects"):
        create_token(tmp_path / "t.json", projects=[""], scopes=["read"])
    # A pattern would grant nothing (projects are exact names), and a name no run can have is refused too.
    with pytest.raises(TokenFileError, match=r"'vis\*': a token names its projects exactly \(no patterns\)"):
        create_token(tmp_path / "t.json", projects=["vis*"], scopes=["read"])
    with pytest.raises(TokenFileError, match=r"control character"):
        create_token(tmp_path / "t.json", projects=["a\nb"], scopes=["read"])
    assert not (tmp_path / "t.json").exists()
    with pytest.raises(TokenFileError, match="no token 'ffffffffffff'"):
        create_token(tmp_path / "t.json", projects=["a"], scopes=["read"])
        revoke_token(tmp_path / "t.json", "ffffffffffff")


def _principal(*projects: str):
    from runwatch.service.tokens import Principal

    return Principal("0123456789ab", frozenset({"ingest"}), frozenset(projects))


def test_screen_refuses_items_of_other_projects_and_keeps_the_rest():
    known = {"b1": "beta", "a1": "alpha"}
    screen = ProjectScreen(known.get)
    b = runs_pb2.EventBatch(sequence=9)
    b.starts.add(run_id="a2", project="alpha")
    b.starts.add(run_id="b1", project="alpha")  # moving beta's run into alpha
    b.starts.add(run_id="c1", project="")  # the default project
    b.events.add(run_id="b1", step=1, metrics={"loss": 1.0})
    b.events.add(run_id="a2", step=1, metrics={"loss": 1.0})
    b.events.add(run_id="nobody", step=1, metrics={"loss": 1.0})  # unknown: the pipeline refuses it
    b.ends.add(run_id="a1")
    s = screen.screen(b.SerializeToString(), _principal("alpha"))
    assert [f for f, _ in s.refused] == ["starts[1].run_id", "starts[2].project", "events[0].run_id"]
    assert "'beta'" not in s.refused[0][1] and "'default'" in s.refused[1][1]
    kept = runs_pb2.EventBatch.FromString(s.raw)
    assert [x.run_id for x in kept.starts] == ["a2"] and [x.run_id for x in kept.events] == ["a2", "nobody"]
    assert kept.sequence == 9 and [x.run_id for x in kept.ends] == ["a1"]
    ack = service_pb2.IngestAck(sequence=9, accepted=3, rejected=1)
    ack.violations.add(field="events[1].run_id", reason="unknown run")
    merged = s.merge(ack)
    assert (merged.accepted, merged.rejected) == (3, 4)
    assert [v.field for v in merged.violations][-1] == "events[2].run_id"  # the path as sent
    # Everything granted: the bytes go through untouched.
    raw = b.SerializeToString()
    assert screen.screen(raw, _principal("*")).raw is raw
    assert screen.screen(raw, _principal("alpha", "beta", "default")).refused == []


def test_screen_with_auto_created_runs_and_on_the_kafka_door():
    batch = runs_pb2.EventBatch(events=[runs_pb2.MetricEvent(run_id="new", step=0, metrics={"loss": 1.0})])
    auto = ProjectScreen(lambda r: None, auto_create_runs=True)
    assert auto.screen(batch.SerializeToString(), _principal("alpha")).refused  # would open it in 'default'
    assert not auto.screen(batch.SerializeToString(), _principal("default")).refused
    kafka = ProjectScreen(lambda r: None, remember_starts=True)
    refused = kafka.screen(batch.SerializeToString(), _principal("alpha")).refused
    assert "unknown to this instance" in refused[0][1]
    start = runs_pb2.EventBatch(starts=[runs_pb2.RunStart(run_id="new", project="alpha")])
    assert not kafka.screen(start.SerializeToString(), _principal("alpha")).refused
    assert not kafka.screen(batch.SerializeToString(), _principal("alpha")).refused  # remembered
    assert kafka.screen(batch.SerializeToString(), _principal("beta")).refused
