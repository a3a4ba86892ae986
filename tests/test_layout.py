"""The layout holds: layers import downward, nothing imports the trainer or the UI, there are no import cycles,
and importing the app never imports timm or the training subpackage."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowerdemo"

# What each layer may import (besides itself and the package root, which holds only the version).
ALLOWED = {
    "core": {"core"},
    "serve": {"core", "serve"},
    "feedback": {"core", "feedback"},
    "ui": {"core", "serve", "feedback", "ui"},
    # the trainer and the evaluator read the app's feedback store as photos from elsewhere (feedback.read);
    # feedback sits below the UI and imports only core, so this edge points down and closes no cycle
    "training": {"core", "serve", "feedback", "training"},
    "cli": {"core", "serve", "feedback"},  # train/export/... are handed over by module name (cli.DELEGATED)
    "__main__": {"cli"},
}
MAX_LINES = 420  # "no file over ~400 lines"

PROBE = """
import json, sys
sys.path.insert(0, {root!r})
import runpy
runpy.run_path({app!r}, run_name="not_main")   # app.py's imports, without launch()
import flowerdemo.cli, flowerdemo.serve.predict, flowerdemo.ui
loaded = sorted(m for m in sys.modules if m == "timm" or m.startswith(("timm.", "flowerdemo.training")))
print(json.dumps(loaded))
"""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported flowerdemo module, line, inside a function) for every import statement in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names
                             if alias.name.split(".")[0] == "flowerdemo")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if base.split(".")[0] == "flowerdemo":
                    # "from . import x" may name a submodule: count it as one when such a file exists
                    targets = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                               for alias in child.names]
                    found.extend((target, child.lineno, in_function) for target in targets)
            visit(child, nested)

    visit(tree, False)
    return found


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root (the version)


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def graph() -> dict[str, set[str]]:
    edges = {module_name(p): set() for p in package_files()}
    for path in package_files():
        for target, _, _ in imports_of(path):
            # a package import loads its __init__; resolve to the deepest module that exists
            while target not in edges and "." in target:
                target = target.rpartition(".")[0]
            if target != module_name(path):
                edges[module_name(path)].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def connect(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_layers_import_downward_only():
    wrong = []
    for path in package_files():
        own = layer_of(module_name(path))
        if own is None:
            continue
        allowed = ALLOWED.get(own, {own})
        for target, line, _ in imports_of(path):
            layer = layer_of(target)
            if layer is not None and layer not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert wrong == []


def test_there_are_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layer_check_sees_a_wrong_import(tmp_path):
    # the probe must be able to fail: a core module that imports the UI is caught
    imports = imports_of(PACKAGE / "ui" / "presenters.py")
    assert any(layer_of(target) == "core" for target, _, _ in imports)
    assert "ui" not in ALLOWED["core"] and "training" not in set().union(*(v for k, v in ALLOWED.items() if k != "training"))


def test_imports_inside_functions_say_why():
    """Function-level imports of the package's own modules hide layering problems; each must carry a comment."""
    silent = []
    for path in package_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, line, in_function in imports_of(path):
            if in_function and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                silent.append(f"{path.relative_to(ROOT)}:{line} ({target})")
    assert silent == []


def test_no_package_file_is_much_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in package_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_verdict_words_are_written_only_where_the_verdict_type_is_defined():
    words = ("\"species\"", "\"unknown_species\"", "\"not_a_flower\"", "\"too_small\"")
    found = {str(p.relative_to(ROOT)) for p in package_files() if any(w in p.read_text(encoding="utf-8") for w in words)}
    assert found == {"flowerdemo/core/verdict.py"}


def modules_loaded_by(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_importing_the_app_never_imports_timm_or_the_trainer():
    assert modules_loaded_by(PROBE.format(root=str(ROOT), app=str(ROOT / "app.py"))) == []


@pytest.mark.slow
def test_the_probe_sees_the_trainer_when_it_is_imported():
    # The same probe must be able to fail: importing the trainer is seen.
    code = PROBE.format(root=str(ROOT), app=str(ROOT / "app.py")).replace(
        "import flowerdemo.cli,", "import flowerdemo.training.train, flowerdemo.cli,")
    assert "flowerdemo.training.train" in modules_loaded_by(code)
