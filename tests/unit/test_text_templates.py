"""Template mining: masking, stable ids, and the JSON state a project's store keeps."""

from __future__ import annotations

import json

import pytest

from runwatch.models.text.templates import JsonStatePersistence, TemplateConfig, TemplateMiner, masker

LINES = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
    "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_-6952295868487656571 terminating",
    "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
    "Receiving block blk_7503483334202473044 src: /10.250.10.6:40524 dest: /10.250.10.6:50010",
    "request 3f2a9c1e-77d4-4b8e-9a51-0c4e2b7d9e10 served from /srv/models/llama/7b/model.safetensors in 12.5ms",
    "request 0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0 served from /srv/models/llama/13b/model.safetensors in 9.1ms",
    "loss nan at step 12",
    "loss 0.53 at step 13",
]


def test_masks():
    m = masker()
    assert m("addr 0x7f9d3689178b ip 172.16.96.116:33569 id 0f203e24912774f27d81279001000000") == "addr <HEX> ip <IP> id <HEX>"
    assert m(r"File E:\ai\venv\lib\torch\serialization.py and ./out/ckpt/step_10.pt") == "File <PATH> and <PATH>"
    assert m("loss nan grad inf lr 1e-4 epoch -3") == "loss nan grad inf lr <NUM> epoch <NUM>"
    with pytest.raises(ValueError):
        masker(("num", "nope"))


def test_same_shape_same_template():
    miner = TemplateMiner()
    got = [miner.add(line) for line in LINES]
    assert got[0].id == got[1].id and got[2].id == got[3].id and got[4].id == got[5].id
    assert [g.new for g in got] == [True, False, True, False, True, False, True, False]
    assert got[6].template == "loss nan at step <NUM>"  # "nan" is kept as a word ...
    assert got[7].template == "loss <*> at step <NUM>"  # ... until a number took its place
    assert miner.lines_seen == len(LINES) and miner.n_templates == 4


def test_json_round_trip_continues_exactly():
    a = TemplateMiner()
    for line in LINES[:5]:
        a.add(line)
    text = a.to_json()
    doc = json.loads(text)  # plain JSON: no pickled objects
    assert doc["format"] == "runwatch.templates/1" and "py/object" not in text
    b = TemplateMiner.from_json(text)
    assert b.to_json() == text and b.templates() == a.templates()
    for line in LINES[5:] + LINES:
        ra, rb = a.add(line), b.add(line)
        assert (ra.id, ra.template, ra.new) == (rb.id, rb.template, rb.new)
    assert a.to_json() == b.to_json()


def test_bad_state_is_refused():
    with pytest.raises(ValueError):
        TemplateMiner.from_json("not json")
    with pytest.raises(ValueError):
        TemplateMiner.from_json(json.dumps({"format": "runwatch.templates/1", "config": {}, "clusters": [["x"]]}))
    text = TemplateMiner().to_json()
    with pytest.raises(ValueError):
        TemplateMiner.from_json(text, config=TemplateConfig(sim_th=0.7))


def test_persistence_handler_round_trip():
    saved = {}
    p = JsonStatePersistence(load=lambda: saved.get("s"), save=lambda text: saved.__setitem__("s", text))
    miner = TemplateMiner(persistence=p)
    miner.add(LINES[0])
    assert miner.dirty
    miner.save()
    assert not miner.dirty and json.loads(saved["s"])["lines_seen"] == 1
    again = TemplateMiner(persistence=JsonStatePersistence(load=lambda: saved["s"]))
    assert again.match(LINES[1]) == miner.match(LINES[1]) is not None


def test_match_does_not_learn():
    miner = TemplateMiner()
    miner.add(LINES[2])
    assert miner.match("something else entirely") is None
    assert miner.lines_seen == 1


@pytest.mark.parametrize("module", ["templates", "extract", "signatures", "sequence", "monitor"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"runwatch.models.text.{module}"))
    assert result.failed == 0 and result.attempted > 0
