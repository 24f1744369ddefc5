"""The shape of the helpers package: imports flow one way (core → data → simulate → models and training → the
papers' methods → runner), without cycles, without reaching into another module's private names; every module is
listed where a contributor looks for it; notebooks size a SMOKE run in one place."""
import ast
import re
from pathlib import Path

import nbformat
import pytest

from helpers import presets, runner

ROOT = Path(__file__).resolve().parent.parent
HELPERS = ROOT / "helpers"

# Layers, lowest first: a module may import its own layer or a lower one, never a higher one.
LAYERS = [
    {"helpers.env", "helpers.presets", "helpers.uncertainty", "helpers.viz", "helpers.cache", "helpers.report",
     "helpers.pixels", "helpers.arrays"},
    {"helpers.data.*"},
    {"helpers.simulate.*"},
    {"helpers.models", "helpers.training", "helpers.features", "helpers.explain", "helpers.xai_metrics",
     "helpers.recipes", "helpers.metric_validation", "helpers.realism"},
    {"helpers.methods.*"},
    {"helpers.runner", "helpers.book"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(HELPERS.rglob("*.py"))}


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if name == entry or (entry.endswith(".*") and (name + ".").startswith(entry[:-1])):
                return i
    if name == "helpers":
        return -1
    raise AssertionError(f"module {name} is in no layer of tests/test_layout.py: add it where it belongs")


def imports(name: str):
    """(imported module, imported names, line) for every helpers import of a module, top level or inside functions."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("helpers"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:                      # `from . import cache` imports a module
                    yield sub, [], node.lineno
                else:
                    yield target, [alias.name], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("helpers"):
                    yield alias.name, [], node.lineno


def edges():
    for name in MODULES:
        for target, names, line in imports(name):
            yield name, target, names, line


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_never_go_up_a_layer():
    upward = [f"{src} (line {line}) imports {dst}" for src, dst, _, line in edges()
              if dst in MODULES and layer_of(dst) > layer_of(src)]
    assert not upward, "imports must flow from higher layers to lower ones:\n" + "\n".join(upward)


def test_import_graph_has_no_cycle():
    graph = {name: set() for name in MODULES}
    for src, dst, _, _ in edges():
        if dst in MODULES and dst != src and not MODULES[dst].name == "__init__.py":
            graph[src].add(dst)
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_module_imports_or_uses_another_modules_private_names():
    private = [f"{src} (line {line}) imports {dst}.{n}" for src, dst, names, line in edges() for n in names
               if n.startswith("_") and dst != src]
    aliases = {}
    for name in MODULES:
        text = MODULES[name].read_text()
        for dst, names, _ in imports(name):
            if not names:
                aliases.setdefault(name, set()).add(dst.rsplit(".", 1)[-1])
        for alias in aliases.get(name, ()):
            for match in re.finditer(rf"(?<![\w.]){alias}\._[A-Za-z]\w*", text):
                private.append(f"{name} uses {match.group(0)}")
    assert not private, "\n".join(private)


def test_the_layout_is_listed_for_contributors():
    listing = (HELPERS / "__init__.py").read_text()
    readme = (ROOT / "README.md").read_text()
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        short = name.removeprefix("helpers.")
        assert f"`{short}`" in listing, f"helpers/__init__.py does not list {short}"
        assert f"`{short}`" in readme, f"README.md's layout section does not list {short}"


def test_the_data_dir_reaches_the_cache_going_down_only():
    # recipes → simulate.datasets → cache → env, and recipes → training → cache → env: each call goes one layer
    # down or stays, never back up to a module it left
    chain = ["helpers.recipes", "helpers.simulate.datasets", "helpers.cache", "helpers.env"]
    assert [layer_of(m) for m in chain] == sorted((layer_of(m) for m in chain), reverse=True)
    datasets_src = MODULES["helpers.simulate.datasets"].read_text()
    assert "cache.folder_for(data_dir" in datasets_src and "check_data_dir" not in datasets_src
    assert "cache.models_root(data_dir)" in MODULES["helpers.training"].read_text()


# ------------------------------------------------------------------------- one way to size a SMOKE run
def parameters_cell(nb):
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell.source


@pytest.mark.parametrize("nb_path", runner.notebooks(), ids=lambda p: p.stem)
def test_smoke_sizes_come_from_presets_only(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    params = parameters_cell(nb)
    assigned = {node.id for node in ast.walk(ast.parse(params)) if isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Store)}
    sizes = presets.NOTEBOOK_SMOKE.get(nb_path.stem, {})
    assert set(sizes) <= assigned, f"smoke sizes without a parameter: {sorted(set(sizes) - assigned)}"
    code = [c.source for c in nb.cells if c.cell_type == "code" and c.source != params]
    smoke_blocks = [src for src in code if re.search(r"^\s*if SMOKE\b", src, re.M)]
    if sizes:
        assert len(smoke_blocks) == 1 and f'presets.notebook_smoke("{nb_path.stem}")' in smoke_blocks[0]
    else:
        assert not smoke_blocks, "size a SMOKE run in helpers.presets, not in an `if SMOKE:` block"
    clamps = [m.group(0) for src in code for m in re.finditer(r"min\(([A-Z][A-Z0-9_]+), \d+\)", src)]
    assert not clamps, f"SMOKE sizes clamped in a cell: {clamps}"


def test_the_code_passes_the_linter():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency (pip install -e '.[dev]')"
    done = subprocess.run([ruff, "check", "--no-cache", "helpers", "tests", "benchmarks", "notebooks"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
