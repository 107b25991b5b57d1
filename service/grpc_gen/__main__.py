"""Regenerate (default) or --check the committed stubs from proto/toxicity.proto (needs grpcio-tools)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parent.parent / "proto"
FILES = ("toxicity_pb2.py", "toxicity_pb2_grpc.py")


def generate(out: Path) -> dict[str, str]:
    from grpc_tools import protoc

    code = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "toxicity.proto"),
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    generated = {name: (out / name).read_text() for name in FILES}
    # protoc writes a top-level import; the stubs live in a package.
    generated["toxicity_pb2_grpc.py"] = generated["toxicity_pb2_grpc.py"].replace(
        "import toxicity_pb2 as toxicity__pb2", "from . import toxicity_pb2 as toxicity__pb2"
    )
    return generated


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    if "--check" in sys.argv:
        stale = [name for name in FILES if (HERE / name).read_text() != fresh[name]]
        if stale:
            print(f"stale gRPC stubs: {stale}; run python -m service.grpc_gen", file=sys.stderr)
            return 1
        return 0
    for name, text in fresh.items():
        (HERE / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
