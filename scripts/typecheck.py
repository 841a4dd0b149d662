"""Run mypy --strict over every module of the project, by its installed name, plus tests/ and bench/.

The top-level folders are installed under the ``sx`` namespace (pyproject's package-dir), so mypy is given
module names (``-m sx.cli._main``) rather than file paths, which it would name ``cli._main``. mypy cannot
follow setuptools' editable-install finder, so the script lays an ``sx/`` tree of links to the folders in a
temporary directory and puts it on MYPYPATH: it checks the working tree whatever the install mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "processors": "sx.processors",
    "worker": "sx.worker",
    "scheduler": "sx.scheduler",
    "protos": "sx.protos",
    "cli": "sx.cli",
}


def modules() -> list[str]:
    names = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue  # generated; typed by the .pyi stubs beside them
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return [*names, "sx.__main__"]  # the root's __main__.py: `python -m sx`


def main() -> int:
    mypy = [sys.executable, "-m", "mypy"]
    # mypy takes either modules or files in one run, not both.
    by_module = [*mypy, *(arg for name in modules() for arg in ("-m", name))]
    folders = [f for f in ("tests", "bench", "scripts", "examples") if any((ROOT / f).rglob("*.py"))]
    with tempfile.TemporaryDirectory(prefix="sx-mypy-") as links:
        namespace = Path(links) / "sx"
        namespace.mkdir()
        for folder, package in PACKAGES.items():
            (namespace / package.removeprefix("sx.")).symlink_to(ROOT / folder, target_is_directory=True)
        (namespace / "__main__.py").symlink_to(ROOT / "__main__.py")
        env = {**os.environ, "MYPYPATH": os.pathsep.join(filter(None, [links, os.environ.get("MYPYPATH")]))}
        return subprocess.call(by_module, cwd=ROOT, env=env) | subprocess.call(
            [*mypy, *folders], cwd=ROOT, env=env
        )


if __name__ == "__main__":
    sys.exit(main())
