"""Generate the Python code for runwatch's protobuf contract.

Run ``python protos/generate.py`` after editing any ``protos/runwatch/v1/*.proto``.
``python protos/generate.py --check`` exits 1 when the committed code is stale
(the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "runwatch" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) on every proto into ``out_dir``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((out_dir / "runwatch" / "v1").glob("*_pb2*"))


def stale_files() -> list[str]:
    """Names of generated files that differ from what protoc would write now."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in PACKAGE_DIR.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}
        names = sorted(set(fresh) | set(committed))
        return [n for n in names if n not in fresh or n not in committed or not filecmp.cmp(fresh[n], committed[n], shallow=False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale generated files")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated code: " + ", ".join(stale) + " (run: python protos/generate.py)")
            return 1
        print("generated code is up to date")
        return 0
    for old in PACKAGE_DIR.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES):
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            (PACKAGE_DIR / path.name).write_bytes(path.read_bytes())
            print(f"wrote {PACKAGE_DIR / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
