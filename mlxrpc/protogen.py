"""Regenerates the protobuf/gRPC stubs from proto/ (``python -m mlxrpc.protogen``).

The stubs are generated into ``mlxrpc/v1/`` so their own imports
(``from mlxrpc.v1 import inference_pb2``) resolve inside this package without
rewriting. tests/test_proto_drift.py runs the same generation into a temporary
folder and fails when the committed stubs differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILES = ["mlxrpc/v1/inference.proto"]
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc (from grpcio-tools) and returns the files it wrote."""
    from grpc_tools import protoc  # dev/test dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    package_dir = out_dir / "mlxrpc" / "v1"
    return sorted(p for p in package_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    written = generate(ROOT)
    for path in written:
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
