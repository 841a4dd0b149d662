"""Generate the Python code for protos/v1/*.proto, or check (--check) that the committed code is current.

The .proto files are compiled as ``sx/protos/v1/<name>.proto`` so the generated modules import each other
as ``sx.protos.v1.<name>_pb2``, the path they are installed under. The generator versions are pinned in
pyproject's dev extra: generated code embeds them, and a different version would show up as drift.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "protos" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(into: Path) -> list[Path]:
    tree = into / "src" / "sx" / "protos" / "v1"
    tree.mkdir(parents=True)
    protos = sorted(SOURCE.glob("*.proto"))
    for proto in protos:
        shutil.copy(proto, tree / proto.name)
    out = into / "out"
    out.mkdir()
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{into / 'src'}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(f"sx/protos/v1/{p.name}" for p in protos),
    ]
    # The mypy-protobuf plugins live beside the interpreter that runs this script (the venv).
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out / "sx" / "protos" / "v1").iterdir() if p.name.endswith(SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        expected = {p.name for p in generated}
        committed = {p.name for p in SOURCE.iterdir() if p.name.endswith(SUFFIXES)}
        stale = sorted(
            p.name for p in generated if not (SOURCE / p.name).exists() or not filecmp.cmp(p, SOURCE / p.name)
        )
        extra = sorted(committed - expected)
        if check:
            if stale or extra:
                print(f"generated protobuf code is out of date: {', '.join(stale + extra)}", file=sys.stderr)
                print("run: python scripts/gen_protos.py", file=sys.stderr)
                return 1
            print("generated protobuf code is up to date")
            return 0
        for p in generated:
            shutil.copy(p, SOURCE / p.name)
        for name in extra:
            (SOURCE / name).unlink()
        print(f"wrote {len(generated)} files to {SOURCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
