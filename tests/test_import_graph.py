"""The daemon's import graph: no cycles between its modules, and run time apart from import.

Every `import` statement under daemon/ is read with `ast` (relative imports resolved), whether
it runs at module level, inside a function, or only for the type checker: each ties one module
to another just the same, and a cycle means neither can be read, tested or moved alone.
The importer (engine/convert/) is for `hush model pull` and `hush model import`: hushd never
loads it, which a real daemon answering a chat shows.

Run `python -m tests.test_import_graph` to print the cycles it finds.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .conftest import Daemon

DAEMON = Path(__file__).resolve().parents[1] / "daemon"
PACKAGE = "hush.daemon"
CONVERT = f"{PACKAGE}.engine.convert"

Kind = Literal["module", "function", "type-checking"]

# Cycles that other parts of issue 18 remove, each as the import edge (importer, imported) that
# closes it. The test fails once an edge is gone, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # Part 1 (handlers get a narrow context): Connection, ChatTurn and summarize() take the
    # whole Server, which imports them.
    ("connection", "server"): "Connection(server) (type-checking)",
    ("chat", "server"): "ChatTurn(server) (type-checking)",
    ("documents", "server"): "summarize(server), Documents(server) (type-checking)",
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    kind: Kind
    line: int


def _module_name(path: Path) -> str:
    parts = path.relative_to(DAEMON).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


MODULES = {_module_name(p): p for p in sorted(DAEMON.rglob("*.py"))}


def _nearest_module(dotted: str) -> str | None:
    """The daemon module an import of `dotted` loads (`a.b.Name` is module `a.b`)."""
    while dotted.startswith(PACKAGE):
        if dotted in MODULES:
            return dotted
        dotted = dotted.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, kind: Kind) -> Iterator[tuple[ast.Import | ast.ImportFrom, Kind]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, kind
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for inner in child.body:
                yield from _walk(ast.Module(body=[inner], type_ignores=[]), "type-checking")
            for inner in child.orelse:
                yield from _walk(ast.Module(body=[inner], type_ignores=[]), kind)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, "function" if kind == "module" else kind)
        else:
            yield from _walk(child, kind)


def edges_of(name: str) -> Iterator[Edge]:
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node, kind in _walk(ast.parse(path.read_text(encoding="utf-8")), "module"):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` loads pkg.sub when that is a module, else just pkg.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for imported in sorted({_nearest_module(t) for t in targets} - {None, name}):
            assert imported is not None
            yield Edge(name, imported, kind, node.lineno)


def graph() -> list[Edge]:
    return [edge for name in MODULES for edge in edges_of(name)]


def _short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".")


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    successors: dict[str, set[str]] = {name: set() for name in MODULES}
    for edge in edges:
        successors[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(successors[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(MODULES):
        if name not in index:
            visit(name)
    return found


def describe(component: list[str], edges: list[Edge]) -> str:
    inside = set(component)
    lines = [" <-> ".join(_short(m) for m in component)]
    lines += [f"    {_short(e.importer)} imports {_short(e.imported)} ({e.kind}, line {e.line})"
              for e in edges if e.importer in inside and e.imported in inside]
    return "\n".join(lines)


def _allowed(edge: Edge) -> bool:
    return (_short(edge.importer), _short(edge.imported)) in ALLOWED


def test_the_walk_sees_module_function_and_type_checking_imports() -> None:
    found = {(_short(e.importer), _short(e.imported), e.kind) for e in graph()}
    assert ("server", "connection", "module") in found
    assert ("connection", "server", "type-checking") in found
    assert ("install", "engine.catalog", "function") in found
    assert ("engine.errors", "errors", "module") in found  # `from ..errors import` resolved


def test_no_import_cycles_between_daemon_modules() -> None:
    edges = [e for e in graph() if not _allowed(e)]
    found = cycles(edges)
    assert not found, "import cycles between daemon modules:\n" + "\n".join(
        describe(c, edges) for c in found)


def test_every_allowed_cycle_is_still_there() -> None:
    """An allowlisted edge that is gone, or no longer closes a cycle, leaves the list."""
    edges = graph()
    in_cycles = {m for component in cycles(edges) for m in component}
    present = {(_short(e.importer), _short(e.imported)) for e in edges
               if e.importer in in_cycles and e.imported in in_cycles}
    stale = sorted(set(ALLOWED) - present)
    assert not stale, f"no longer part of a cycle, remove from ALLOWED: {stale}"


def test_daemon_modules_import_each_other_relatively() -> None:
    # One style inside the package (the majority's): `from .errors import`, never
    # `from hush.daemon.errors import`.
    absolute = [f"{_short(name)} line {node.lineno}"
                for name, path in MODULES.items()
                for node, _kind in _walk(ast.parse(path.read_text(encoding="utf-8")), "module")
                if (isinstance(node, ast.ImportFrom) and node.level == 0
                    and (node.module or "").startswith(PACKAGE))
                or (isinstance(node, ast.Import)
                    and any(a.name.startswith(PACKAGE) for a in node.names))]
    assert not absolute, "absolute imports of hush.daemon inside it: " + ", ".join(absolute)


def test_only_the_importer_imports_the_importer() -> None:
    outside = [f"{_short(e.importer)} imports {_short(e.imported)} ({e.kind}, line {e.line})"
               for e in graph()
               if e.imported.startswith(CONVERT) and not e.importer.startswith(CONVERT)]
    assert not outside, "run-time modules import engine/convert/:\n" + "\n".join(outside)


def test_a_daemon_answering_a_chat_never_loads_the_importer(tiny_daemon: Daemon) -> None:
    loaded = tiny_daemon.state_dir.parent / "loaded-modules.txt"
    # hushd itself, with a hook that writes down, as it exits, which modules it loaded.
    tiny_daemon.program = [sys.executable, "-c", textwrap.dedent(f"""
        import atexit, runpy, sys

        def report():
            with open({str(loaded)!r}, "w") as out:
                out.write("\\n".join(sorted(sys.modules)))

        atexit.register(report)
        sys.argv[0] = "hushd"
        runpy.run_module("hush.daemon", run_name="__main__")
        """)]
    tiny_daemon.start()
    answer = tiny_daemon.hush("ask", "--max-tokens", "4", "hello")
    assert answer.returncode == 0, answer.stderr
    assert tiny_daemon.stop() == 0, tiny_daemon.log
    modules = loaded.read_text().splitlines()
    assert f"{PACKAGE}.engine.generator" in modules  # the hook saw the daemon's run time
    assert [m for m in modules if m.startswith(CONVERT)] == []


def test_importing_the_server_loads_no_importer() -> None:
    # In a fresh interpreter. By prefix: a plain 'convert' in the name would also match
    # numpy._utils._convertions, which numpy loads.
    result = subprocess.run(
        [sys.executable, "-c", "import hush.daemon.server, hush.daemon.cli, sys; "
         f"print([m for m in sys.modules if m.startswith({CONVERT!r})])"],
        capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


if __name__ == "__main__":
    all_edges = graph()
    components = cycles(all_edges)
    print("\n".join(describe(c, all_edges) for c in components) or "no cycles")
    sys.exit(1 if components else 0)
