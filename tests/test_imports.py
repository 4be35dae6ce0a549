"""nst_fast's modules import one another in one direction: no module imports itself in a
circle, not even through an import inside a function.

A circle makes the import order matter (a name missing "from a partially initialized
module") and ties two concepts together so neither can change alone. The walker reads the
source with ``ast`` and imports nothing, so it sees the lazy imports that only run later.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nst_fast

PACKAGE_DIR = Path(nst_fast.__file__).resolve().parent


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under ``package_dir``, by its dotted name."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(name: str, path: Path) -> set[str]:
    """The dotted names one module imports, at its top and inside its functions alike;
    ``from A import b`` gives both A and A.b, since b may be a module or a name in A."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: counted from the module's own package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Each module and the package's modules it imports (a name inside a module counts as
    that module; the package's own ``__init__``, importing nothing, is left out)."""
    modules = module_files(package_dir)
    top = package_dir.name
    graph = {}
    for name, path in modules.items():
        graph[name] = set()
        for target in imported_names(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target not in (name, top):
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[str]:
    """The groups of modules that reach one another through imports, as 'a <-> b'."""
    reach = {}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph.get(module, ()))
        reach[start] = seen
    groups = {
        frozenset({start} | {other for other in reach[start] if start in reach[other]})
        for start in graph
    }
    return sorted(" <-> ".join(sorted(group)) for group in groups if len(group) > 1)


def test_no_module_of_nst_fast_imports_itself_in_a_circle():
    found = "\n".join(circles(import_graph(PACKAGE_DIR)))
    assert not found, f"import circles; move what both sides need into a lower module:\n{found}"


def test_an_import_inside_a_function_closes_a_circle_too(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub.b import helper\n")
    (package / "sub" / "b.py").write_text("def helper():\n    from ..a import x\n")
    (package / "c.py").write_text("import pkg.a\n")

    graph = import_graph(package)

    assert graph["pkg.c"] == {"pkg.a"}
    assert circles(graph) == ["pkg.a <-> pkg.sub.b"]
