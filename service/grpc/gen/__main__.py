"""Regenerate (default) or --check the committed stubs from proto/*.proto (needs grpcio-tools)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parents[2] / "proto"
PROTOS = ("toxicity", "open_inference")
# Stubs built in a descriptor pool of their own, not protobuf's process-wide default: the Open
# Inference Protocol's messages are named as its clients name theirs (tritonclient's `inference.*`),
# and two definitions of one name cannot share a pool. The wire only sees field numbers and the
# service's path, so a client and this server can live in one process (the tests do).
PRIVATE_POOL = {"open_inference"}
POOL_LINE = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
FILES = tuple(f"{name}{suffix}" for name in PROTOS for suffix in ("_pb2.py", "_pb2_grpc.py"))


def generate(out: Path) -> dict[str, str]:
    from grpc_tools import protoc

    for name in PROTOS:
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                str(PROTO_DIR / f"{name}.proto"),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {name}.proto ({code})")
    generated = {name: (out / name).read_text() for name in FILES}
    # protoc writes top-level imports; the stubs live in a package.
    for name in PROTOS:
        escaped = name.replace("_", "__")
        generated[f"{name}_pb2_grpc.py"] = generated[f"{name}_pb2_grpc.py"].replace(
            f"import {name}_pb2 as {escaped}__pb2", f"from . import {name}_pb2 as {escaped}__pb2"
        )
    for name in PRIVATE_POOL:
        module = generated[f"{name}_pb2.py"]
        assert POOL_LINE in module, f"protoc's output for {name}.proto changed shape"
        generated[f"{name}_pb2.py"] = module.replace(
            POOL_LINE,
            "POOL = _descriptor_pool.DescriptorPool()  # see service/grpc/gen/__main__.py\n"
            "DESCRIPTOR = POOL.AddSerializedFile(",
        )
    return generated


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
    if "--check" in sys.argv:
        stale = [name for name in FILES if (HERE / name).read_text() != fresh[name]]
        if stale:
            print(f"stale gRPC stubs: {stale}; run python -m service.grpc.gen", file=sys.stderr)
            return 1
        return 0
    for name, text in fresh.items():
        (HERE / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
