"""No import cycles among scailflow's modules, function-level imports included (a lazy import that only dodges a
cycle is still a cycle): read statically from the source with `ast`, so it costs milliseconds and imports nothing.

Once broken: scail/cli.py <-> scail/parallel.py (the generate flags now live in scail/arguments.py) and
flows/folder_flow.py <-> flows/report.py (the stage names now live beside `Stage` in scailflow/options.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {  # installed name -> folder (pyproject.toml's package-dir)
    "scailflow": "scailflow",
    "scailflow.flows": "flows",
    "scailflow.tasks": "tasks",
    "scailflow.scail": "scail",
    "scailflow.pose": "pose",
    "scailflow.masks": "masks",
    "scailflow.prompts": "prompts",
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in (ROOT / folder).glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The scailflow modules `name` imports anywhere in its file (`from pkg import mod` counts as mod)."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in g:
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_the_modules_named_in_the_issue():
    g = graph()
    assert "scailflow.scail.arguments" in g["scailflow.scail.parallel"]
    assert "scailflow.scail.arguments" in g["scailflow.scail.cli"]
    assert "scailflow.flows.report" in g["scailflow.flows.folder_flow"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles (move the shared piece where both can import it):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_the_retry_policy_imports_no_stage_library():
    stages = ("scailflow.prompts", "scailflow.masks", "scailflow.pose", "scailflow.scail")
    imported = graph()["scailflow.tasks.common"]
    assert not [m for m in imported if m.startswith(stages)], imported
