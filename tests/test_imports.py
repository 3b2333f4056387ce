"""The first-party import graph: no circles, and imports pointing one way
(``flows`` -> ``pipeline`` -> ``models``; inside ``pipeline``, base <- corpus <- training <- evaluation
<- generation <- report).  Read from the source with ``ast``, module-level and function-local imports
alike (a local import hides a circle from Python, not from this test)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "pipeline", "models", "bench")
# pipeline's packages in import order: each may import the base (the modules directly in pipeline/) and the
# packages before it, never one after it; the base imports none of them (docs/ARCHITECTURE.md)
PIPELINE_LAYERS = ("corpus", "training", "evaluation", "generation", "report")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    local: bool  # inside a function


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every first-party module by dotted name."""
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """A first-party module for an imported name (bench scripts import ``machine`` as top level)."""
    if name in known:
        return name
    if f"bench.{name}" in known:
        return f"bench.{name}"
    return None


def _function_local(tree: ast.AST) -> set[int]:
    """ids of import nodes that sit inside a function."""
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return local


def edges() -> list[Edge]:
    """Every first-party import as an edge (``from pkg import mod`` points at the module)."""
    known = modules()
    found: list[Edge] = []
    for src, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        local = _function_local(tree)
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = src.split(".") if is_package else src.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if _resolve(f"{base}.{alias.name}", known) else base
                           for alias in node.names]
            for target in targets:
                dst = _resolve(target, known)
                if dst is not None and dst != src:
                    found.append(Edge(src, dst, node.lineno, id(node) in local))
    return found


def cycles(graph_edges: list[Edge]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in graph_edges:
        graph.setdefault(e.src, set()).add(e.dst)
        graph.setdefault(e.dst, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(sorted(c), graph) for c in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth first)."""
    members, start = set(component), component[0]
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in component {component}")


def _describe(cycle: list[str], graph_edges: list[Edge]) -> str:
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        e = next(e for e in graph_edges if e.src == a and e.dst == b)
        lines.append(f"  {a} -> {b}  ({a.replace('.', '/')}.py:{e.line}{', in a function' if e.local else ''})")
    return "\n".join(lines)


def test_the_walker_sees_module_level_and_local_imports():
    found = edges()
    assert any(e.src == "flows.cli" and e.dst.startswith("pipeline.") for e in found)
    assert any(e.local for e in found), "function-local imports are part of the graph"
    # a circle made up here is found, and printed as one
    made_up = [Edge("a", "b", 1, False), Edge("b", "c", 2, True), Edge("c", "a", 3, False), Edge("c", "d", 4, False)]
    assert cycles(made_up) == [["a", "b", "c", "a"]]


def test_no_import_circles():
    found = edges()
    circles = cycles(found)
    assert not circles, "import circles:\n" + "\n\n".join(_describe(c, found) for c in circles)


def test_imports_point_one_way():
    """models/ imports neither pipeline/ nor flows/; pipeline/ does not import flows/."""
    forbidden = {"models": ("pipeline", "flows", "bench"), "pipeline": ("flows", "bench"), "flows": ("bench",)}
    wrong = [e for e in edges()
             if e.dst.split(".")[0] in forbidden.get(e.src.split(".")[0], ())]
    assert not wrong, "imports pointing the wrong way:\n" + "\n".join(
        f"  {e.src} -> {e.dst} (line {e.line})" for e in wrong)


def _layer(module: str) -> int | None:
    """Place of a pipeline module in ``PIPELINE_LAYERS`` (0 = the base), None outside pipeline."""
    parts = module.split(".")
    if parts[0] != "pipeline":
        return None
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / "pipeline" / parts[1]).is_dir()):
        return PIPELINE_LAYERS.index(parts[1]) + 1
    return 0


def wrong_way(graph_edges: list[Edge]) -> list[Edge]:
    """Imports inside pipeline/ from a package to one after it in ``PIPELINE_LAYERS`` (or from the base up)."""
    return [e for e in graph_edges
            if (a := _layer(e.src)) is not None and (b := _layer(e.dst)) is not None and b > a]


def test_every_pipeline_package_has_a_place():
    packages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert packages == set(PIPELINE_LAYERS), f"place each package of pipeline/ in PIPELINE_LAYERS: {packages}"


def test_the_layer_check_sees_an_arrow_up():
    made_up = [Edge("pipeline.corpus.audio", "pipeline.config", 1, False),  # to the base: allowed
               Edge("pipeline.generation.plan", "pipeline.training.score_tier", 2, True),  # down: allowed
               Edge("pipeline.training.trainer", "pipeline.evaluation.evaluate", 3, True),  # up
               Edge("pipeline.config", "pipeline.corpus.transcribe", 4, True),  # the base up
               Edge("flows.cli", "pipeline.report.build", 5, False)]  # flows may import anything
    assert [e.line for e in wrong_way(made_up)] == [3, 4]


def test_pipeline_packages_point_one_way():
    """base <- corpus <- training <- evaluation <- generation <- report, function-local imports included."""
    wrong = wrong_way(edges())
    assert not wrong, "imports pointing the wrong way between pipeline's packages " \
        f"(order: base, {', '.join(PIPELINE_LAYERS)}):\n" + "\n".join(
            f"  {e.src} -> {e.dst} ({e.src.replace('.', '/')}.py:{e.line}{', in a function' if e.local else ''})"
            for e in wrong)
