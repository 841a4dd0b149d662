"""The shape of the code: dependencies point one way, no import cycles, private modules stay private,
every module says what it offers, and pyproject installs every package.

The layers, lowest first (a module may import its own group and lower layers, never a higher layer or
another group of its own layer):

    0  sx.processors | sx.protos             the author's API; the wire protocol and request signing
    1  sx.scheduler base (_clock, _settings, _errors, ...) | sx.worker runtime | sx.worker.openapi
    2  sx.scheduler.store                    records and the store interfaces, store.sql
    3  sx.scheduler.jobs | sx.scheduler.dispatch | sx.worker.map
    4  sx.scheduler.workflows | sx.worker._worker (the worker's composition root), _instances, _messages
    5  sx.scheduler.api | sx.worker (its face)
    6  sx.scheduler._server (and _metrics, _health) and sx.scheduler (its face)
    7  sx.worker.testing                     the test kit, which starts a scheduler through its face,
       sx.worker.pytest_plugin               and its pytest fixtures
    8  sx.cli                                the command: the only package that uses worker and scheduler
"""

from __future__ import annotations

import ast
import importlib
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"processors": "sx.processors", "protos": "sx.protos", "scheduler": "sx.scheduler",
           "worker": "sx.worker", "cli": "sx.cli"}  # fmt: skip
OUTSIDE = ("tests", "bench", "examples", "scripts")


@dataclass(frozen=True)
class Layer:
    rank: int
    group: str


def layer_of(module: str) -> Layer:
    """The layer and group of an ``sx`` module (the most specific rule wins)."""
    rules: list[tuple[str, Layer]] = [
        ("sx.processors", Layer(0, "processors")),
        ("sx.protos", Layer(0, "protos")),
        ("sx.scheduler.store", Layer(2, "store")),
        ("sx.scheduler.jobs", Layer(3, "jobs")),
        ("sx.scheduler.dispatch", Layer(3, "dispatch")),
        ("sx.scheduler.workflows", Layer(4, "workflows")),
        ("sx.scheduler.api", Layer(5, "api")),
        # The web console is the other HTTP face over the same services: the api's layer and group.
        ("sx.scheduler.console", Layer(5, "api")),
        ("sx.scheduler._server", Layer(6, "scheduler")),
        # What only the composition root wires in: metrics over records, readiness over the parts.
        ("sx.scheduler._metrics", Layer(6, "scheduler")),
        ("sx.scheduler._health", Layer(6, "scheduler")),
        ("sx.worker.openapi", Layer(1, "openapi")),
        ("sx.worker.map", Layer(3, "map")),
        ("sx.worker._worker", Layer(4, "worker-root")),
        ("sx.worker._instances", Layer(4, "worker-root")),
        ("sx.worker._messages", Layer(4, "worker-root")),
        ("sx.worker.testing", Layer(7, "testing")),
        ("sx.worker.pytest_plugin", Layer(7, "testing")),
        ("sx.cli", Layer(8, "cli")),
    ]
    for prefix, layer in sorted(rules, key=lambda rule: -len(rule[0])):
        if module == prefix or module.startswith(prefix + "."):
            return layer
    if module == "sx.scheduler":
        return Layer(6, "scheduler")
    if module == "sx.worker":
        return Layer(5, "worker-face")
    if module.startswith("sx.scheduler._"):
        return Layer(1, "scheduler-base")
    if module.startswith("sx.worker._"):
        return Layer(1, "worker-runtime")
    raise AssertionError(f"{module} has no layer: add it to tests/test_layout.py")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = [FOLDERS[rel.parts[0]], *rel.with_suffix("").parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_generated(path: Path) -> bool:
    return path.name.endswith(("_pb2.py", "_pb2_grpc.py"))


def product_files() -> Iterator[Path]:
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not is_generated(path):
                yield path


def outside_files() -> Iterator[Path]:
    for folder in OUTSIDE:
        yield from sorted((ROOT / folder).rglob("*.py"))


KNOWN_MODULES = {module_name(p) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every ``sx`` module a file imports, wherever the import statement is (functions and
    ``TYPE_CHECKING`` blocks included); ``from package import submodule`` counts as the submodule."""
    seen = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sx."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module is None or not node.module.startswith("sx."):
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found = (node.lineno, submodule if submodule in KNOWN_MODULES else node.module)
                if found not in seen:
                    seen.add(found)
                    yield found


def test_imports_are_absolute() -> None:
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in [*product_files(), *outside_files()]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.level
    ]
    assert not relative, "relative imports (use absolute sx. imports):\n" + "\n".join(relative)


def owner_of_private(module: str) -> str | None:
    """The package a private module belongs to (``sx.scheduler.store.sql`` for its ``_store``)."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    return None


def test_dependencies_point_one_way() -> None:
    wrong = []
    for path in product_files():
        me = module_name(path)
        mine = layer_of(me)
        for line, target in imported_modules(path):
            theirs = layer_of(target)
            if theirs.group == mine.group:
                continue
            if theirs.rank >= mine.rank:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_worker_and_scheduler_never_import_each_other() -> None:
    wrong = []
    for path in product_files():
        me = module_name(path)
        for line, target in imported_modules(path):
            crossing = (me.startswith("sx.worker") and target.startswith("sx.scheduler")) or (
                me.startswith("sx.scheduler") and target.startswith("sx.worker")
            )
            # The test kit starts a real scheduler, through its public face only.
            if crossing and not (me == "sx.worker.testing" and target == "sx.scheduler"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for path in product_files():
        graph.setdefault(module_name(path), set()).update(t for _, t in imported_modules(path))
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of two or more modules that import each other, and self-imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_private_modules_are_imported_only_by_their_package_and_its_tests() -> None:
    wrong = []
    for path in [*product_files(), *outside_files()]:
        rel = path.relative_to(ROOT)
        me = module_name(path) if rel.parts[0] in FOLDERS else None
        # tests/scheduler/... are the tests of sx.scheduler and everything under it, and so on.
        tested = f"sx.{rel.parts[1]}" if rel.parts[0] == "tests" and len(rel.parts) > 2 else None
        for line, target in imported_modules(path):
            owner = owner_of_private(target)
            if owner is None:
                continue
            if me is not None and (me == owner or me.startswith(owner + ".")):
                continue
            if tested is not None and (owner == tested or owner.startswith(tested + ".")):
                continue
            wrong.append(f"{rel}:{line}: imports {target}, private to {owner}")
    assert not wrong, "use the package's face instead:\n" + "\n".join(wrong)


def test_every_module_declares_what_it_offers() -> None:
    missing = []
    for path in product_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        declared = any(
            isinstance(node, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(target, ast.Name) and target.id == "__all__"
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            )
            for node in tree.body
        )
        empty_init = path.name == "__init__.py" and not tree.body
        migration = "migrations" in path.parts
        if not (declared or empty_init or migration):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, "modules without __all__:\n" + "\n".join(missing)


@pytest.mark.parametrize("module", sorted(m for m in KNOWN_MODULES if "migrations" not in m))
def test_every_exported_name_exists(module: str) -> None:
    if module.endswith(("_pb2", "_pb2_grpc")) or module.startswith("sx.scheduler.store.sql.migrations"):
        return
    loaded = importlib.import_module(module)
    exported = getattr(loaded, "__all__", [])
    assert len(set(exported)) == len(exported), f"{module}.__all__ lists a name twice"
    assert [name for name in exported if not hasattr(loaded, name)] == []


def test_pyproject_installs_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {module_name(init) for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    # The root is the `sx` namespace itself, for its __main__.py (`python -m sx`).
    assert listed == {"sx", *on_disk}
    assert config["package-dir"] == {"sx": ".", **{package: folder for folder, package in FOLDERS.items()}}
