"""The package's shape: no import cycle (deferred imports included), bounded module sizes, one storage
module touching Optuna's internals, a documented and typed public API."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "optimizer"
#: Modules allowed over the size limit, each with the reason its docstring gives.
SIZE_LIMIT = 600


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every optimizer module ``name`` imports when it runs: module level and inside functions (deferred),
    but not under ``if TYPE_CHECKING:`` (never executed)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "optimizer")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != "optimizer":
                    continue
                for alias in child.names:  # `from . import cli_module` imports a submodule
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return {m for m in found if m in modules}


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_walker_sees_deferred_imports(tmp_path: Path) -> None:
    """The cycle test would be blind if function-level imports were skipped."""
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\ndef f():\n    from .c import Y\n"
    )
    path = PACKAGE / "tuning" / "probe_example.py"
    modules = {"optimizer.tuning.b": path, "optimizer.tuning.c": path, "optimizer.tuning.probe_example": path}
    fake = tmp_path / "probe_example.py"
    fake.write_text(source)
    assert _imports("optimizer.tuning.probe_example", fake, modules) == {"optimizer.tuning.c"}


def test_modules_stay_small() -> None:
    big = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
        if len(path.read_text(encoding="utf-8").splitlines()) > SIZE_LIMIT
    }
    assert not big, f"modules over {SIZE_LIMIT} lines (split them by responsibility): {big}"


def test_optuna_internals_stay_in_the_storage_module() -> None:
    allowed = {PACKAGE / "tuning" / "storage.py"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("optuna.storages._", "optuna.storages.journal._", "._storage", "._trial_id", "optuna._"):
            if needle in text:
                offenders.append(f"{path.relative_to(PACKAGE)}: {needle}")
    assert not offenders, offenders


def test_no_merge_conflict_markers_are_committed() -> None:
    root = PACKAGE.parent
    offenders = []
    for folder in ("optimizer", "tests", "benchmarks", "docs", "notebooks"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".toml", ".ipynb", ".sh", ".yaml", ".txt"}:
                for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    if line.startswith(("<<<<<<< ", ">>>>>>> ")):
                        offenders.append(f"{path.relative_to(root)}:{number}")
    for name in ("README.md", "pyproject.toml", "compose.yaml", "Dockerfile"):
        text = (root / name).read_text(encoding="utf-8")
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if line.startswith("<<<<<<< ")]
    assert not offenders, offenders


def test_public_api_is_documented_and_typed() -> None:
    """Every name in ``optimizer.__all__`` has a docstring; functions say what they take and return."""
    import inspect

    import optimizer

    undocumented = []
    for name in optimizer.__all__:
        obj = getattr(optimizer, name)
        doc = inspect.getdoc(obj) or ""
        if not doc:
            undocumented.append(f"{name}: no docstring")
            continue
        if not inspect.isfunction(obj):
            continue
        signature = inspect.signature(obj)
        if signature.parameters and "Args:" not in doc:
            undocumented.append(f"{name}: no Args section")
        if signature.return_annotation in (inspect.Signature.empty, ""):
            undocumented.append(f"{name}: no return annotation")
        elif signature.return_annotation not in (None, "None") and "Returns:" not in doc:
            undocumented.append(f"{name}: no Returns section")
        missing = [p for p, v in signature.parameters.items() if v.annotation is inspect.Parameter.empty]
        if missing:
            undocumented.append(f"{name}: untyped {', '.join(missing)}")
    assert not undocumented, "\n".join(undocumented)
