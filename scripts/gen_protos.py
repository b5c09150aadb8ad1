"""Generates the Python stubs for the switchyard.v1 contract.

One command, run from anywhere: ``python scripts/gen_protos.py``. It compiles
every ``protos/switchyard/v1/*.proto`` with grpcio-tools and writes the result
to ``protos/switchyard/v1/`` (importable as ``switchyard.v1``). With ``--check`` it
writes nothing and exits 1 when the committed stubs differ from a fresh
generation (the test suite runs that).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("switchyard") / "v1"
TARGET = PROTO_ROOT / PACKAGE
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> dict[str, str]:
    """Compiles the protos into ``out_dir`` and returns {file name: text}."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    # protoc resolves relative proto paths against the working directory.
    import os

    cwd = os.getcwd()
    os.chdir(PROTO_ROOT)
    try:
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    produced = out_dir / PACKAGE
    return {p.name: p.read_text() for p in sorted(produced.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)}


def committed() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(TARGET.iterdir()) if p.name.endswith(GENERATED_SUFFIXES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    if args.check:
        current = committed()
        if current != fresh:
            stale = sorted(set(current) ^ set(fresh) | {n for n in fresh if current.get(n) != fresh[n]})
            print(f"generated stubs are stale: {', '.join(stale)}; run python scripts/gen_protos.py", file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    for name in committed():
        if name not in fresh:
            (TARGET / name).unlink()
    for name, text in fresh.items():
        (TARGET / name).write_text(text)
    print(f"wrote {len(fresh)} files to {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
