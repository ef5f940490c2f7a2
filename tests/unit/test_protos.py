"""The generated code matches the .proto files (regenerate with `python protos/generate.py`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_protos", ROOT / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current():
    assert _generator().stale_files() == []


def test_staleness_is_detected(tmp_path, monkeypatch):
    gen = _generator()
    pkg = tmp_path / "runwatch" / "v1"
    pkg.mkdir(parents=True)
    for p in gen.PACKAGE_DIR.iterdir():
        if p.suffix in (".proto", ".py", ".pyi"):
            (pkg / p.name).write_bytes(p.read_bytes())
    proto = pkg / "runs.proto"
    proto.write_text(proto.read_text().replace("  int64 step = 5;\n}", "  int64 step = 5;\n  string extra = 6;\n}"))
    monkeypatch.setattr(gen, "PROTO_ROOT", tmp_path)
    monkeypatch.setattr(gen, "PACKAGE_DIR", pkg)
    assert "runs_pb2.py" in gen.stale_files()
