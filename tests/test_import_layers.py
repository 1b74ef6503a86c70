"""The modules import each other in layers: no circle, counting imports inside functions too; the library
(riser_lite) never imports the lab (riser_lab: the command line and the experiments built on the library)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "riser_lite", ROOT / "riser_lab")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the riser_lite modules it imports anywhere in its body (top level or inside functions).

    ``from a.b import c`` points at ``a.b.c`` when c is a module, else at ``a.b``; relative imports are
    resolved against the importing module. Importing ``riser_lite.a.b`` also runs the package
    ``riser_lite.a`` first, so that package is an edge too, unless the importer lies inside it (then it has
    run already). The top-level packages are left out: every module lies inside one.
    """
    modules = {module_name(p): p for package in PACKAGES for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        packages = {parent for t in targets for parent in _parents(t) if not _inside(name, parent)}
        graph[name] = {t for t in targets | packages if t in modules and t != name}
    return graph


def _parents(module: str) -> list[str]:
    """The packages Python runs before ``module``, below the root: a.b.c.d -> [a.b, a.b.c]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [m0, m1, ..., m0], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert len(graph) > 50  # every module of the package was read
    assert "riser_lite.model.forward" in graph["riser_lite.model.policy_logp"]  # a top-level import
    assert "riser_lite.eval.evaluate" in graph["riser_lite.sft"]  # imported inside validation_ranking
    # eval.evaluate imports data.synthetic.prompt_oracle, which runs the packages data and data.synthetic
    assert {"riser_lite.data", "riser_lite.data.synthetic"} <= graph["riser_lite.eval.evaluate"]
    assert "riser_lite.data" not in graph["riser_lite.data.amazon_csv"]  # its own package has run already
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_library_never_imports_the_lab():
    graph = import_graph()
    assert "riser_lab.sasrec" in graph["riser_lab.cli.train"]  # the lab's modules are in the graph
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("riser_lite")
                    for t in targets if t.startswith("riser_lab"))
    assert not upward, upward


def test_every_function_reads_at_once():
    """No function or method of the package is over 100 lines (docstring included): each reads at once."""
    long = []
    for path in sorted(p for package in PACKAGES for p in package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 100:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, long
