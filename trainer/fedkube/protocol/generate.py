"""Regenerate the checked-in gRPC stubs from fedkube.proto (`make proto`).

The stubs are committed so the runtime needs no grpcio-tools; a test regenerates them into a
temporary folder and checks they match, so the .proto and the stubs cannot drift apart.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
STUBS = ("fedkube_pb2.py", "fedkube_pb2_grpc.py", "fedkube_pb2.pyi")


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(HERE / "fedkube.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on fedkube.proto")
    grpc_stub = out_dir / "fedkube_pb2_grpc.py"
    # protoc emits a top-level import; the stubs live inside the fedkube.protocol package.
    grpc_stub.write_text(re.sub(r"^import fedkube_pb2 as", "from fedkube.protocol import fedkube_pb2 as",
                                grpc_stub.read_text(), flags=re.M))


def check() -> list[str]:
    """Names of checked-in stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [name for name in STUBS if (Path(tmp) / name).read_text() != (HERE / name).read_text()]


if __name__ == "__main__":
    generate(HERE)
    sys.exit(0)
