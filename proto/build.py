"""Regenerate the gRPC stubs for `proto/nodepool.proto` with grpcio-tools.

Usage: `python -m proto.build [OUT_ROOT]` (default: the repository root).

protoc is run from the repository root with `-I.` and the file named `proto/nodepool.proto`,
so the stubs land in `OUT_ROOT/proto/` and the grpc module imports its messages as
`from proto import nodepool_pb2` — importable as a package, not only from inside `proto/`.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_FILE = "proto/nodepool.proto"
GENERATED_FILES = ("nodepool_pb2.py", "nodepool_pb2_grpc.py", "nodepool_pb2.pyi")


def generate(out_root: Path = REPO_ROOT) -> list[Path]:
    """Write the stubs under `out_root/proto/` and return their paths."""
    out_root = Path(out_root)
    (out_root / "proto").mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(REPO_ROOT / PROTO_FILE),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status} for {PROTO_FILE}")
    return [out_root / "proto" / name for name in GENERATED_FILES]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out_root = Path(argv[0]) if argv else REPO_ROOT
    for path in generate(out_root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
