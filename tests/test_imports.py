"""The house's import rules, over every module of app/ and model/: no import cycle (imports inside
functions included, those under ``if TYPE_CHECKING:`` not), and no module importing another
module's ``_private`` name (``from x import _name``, or ``x._name`` on an imported module); and
the sizes: no module over 500 lines, no function over 120 (the training loop excepted)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "model")


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages (a package by its __init__.py)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str | None, int, str]]:
    """(imported module, imported name or None, line, local name) for each import of module ``name``
    that lands in the packages; ``from pkg import mod`` counts as importing the module pkg.mod."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno, a.asname or a.name) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:
                    out.append((sub, None, node.lineno, a.asname or a.name))
                elif target in known:
                    out.append((target, a.name, node.lineno, a.asname or a.name))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for t, _, _, _ in imports(m, p, known) if t != m} for m, p in known.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        state[m] = 2
        path.pop()
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_checker_sees_a_cycle_and_the_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    g = graph()
    assert "app.search" in g and "app.search.base" in g and "model.gpt" in g
    assert "app.search.base" in g["app.search.bound"] and "app.store" in g["app.search.base"]


def test_no_import_cycle_in_app_and_model():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_another_modules_private_names():
    known = modules()
    bad = []
    for m, path in known.items():
        found = imports(m, path, known)
        bad += [f"{path.relative_to(REPO)}:{line}: from {t} import {n}"
                for t, n, line, _ in found if n and n.startswith("_") and not n.startswith("__")]
        aliases = {local: t for t, n, _, local in found if n is None}  # local name -> module
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                dotted = ast.unparse(node.value)
                if dotted in aliases and aliases[dotted] != m:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {dotted}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


# --- sizes: a module a reader can hold, a function a reader can follow ---------------------------
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 120
LONG_ALLOWED = {("model.train", "train")}  # the training loop stays one readable function


def test_no_module_over_500_lines_and_no_function_over_120():
    too_long = []
    for name, path in modules().items():
        src = path.read_text()
        if len(src.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(src.splitlines())} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    (name, node.name) not in LONG_ALLOWED:
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {n} lines")
    assert not too_long, too_long
