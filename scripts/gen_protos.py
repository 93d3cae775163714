"""Regenerate meshkit/api/**/*_pb2*.py from the .proto sources.

Usage: python scripts/gen_protos.py [--out DIR]

With --out the modules are written below DIR instead of in place; the test
suite uses that to check the committed modules match their sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "meshkit" / "api"
# Which protos define services (these also get a _pb2_grpc module).
SERVICES = {"rpc.proto", "v3lock.proto", "v3election.proto"}


def proto_files() -> list[Path]:
    return sorted(API.rglob("*.proto"))


def generate(out: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    for proto in proto_files():
        rel = proto.relative_to(ROOT).as_posix()
        args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}"]
        if proto.name in SERVICES:
            args.append(f"--grpc_python_out={out}")
        args.append(rel)
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {rel}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    ns = parser.parse_args(argv)
    generate(ns.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
