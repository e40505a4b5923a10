"""The promises about the code's shape, checked so they cannot drift: the top level holds the
scripts, model.py and recurrent.py over one library package; model.py reads no files and imports
nothing of ours; one ground module; no import cycle between files or folders (lazy imports
included); no script leaning on another; errors raised as UserError where they are found, never
swallowed; train.py's loop near its top; lines left as ruff formats them."""

import ast
import re

import pytest
from conftest import ROOT

PRODUCT = sorted(
    p
    for p in ROOT.rglob("*.py")
    if not {"tests", ".venv", "wandb"} & set(p.relative_to(ROOT).parts)
)
SCRIPTS = {"train", "sample", "attention_maps", "bench", "long_range"} | {
    ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in ROOT.glob("data/*/prepare.py")
}
READ_BESIDE_THE_SCRIPTS = {"model", "recurrent"}  # what a student reads: the notes' models


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in PRODUCT}


def project_imports(path):
    """The project modules a file imports anywhere in it (top level, inside functions, `from gptkit
    import x`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found - {module_name(path), "gptkit", "data"}


GRAPH = {name: project_imports(path) for name, path in MODULES.items()}
LIBRARY = {name for name in MODULES if name.startswith("gptkit.")}


def test_the_top_level_is_scripts_the_notes_models_and_one_package():
    top_files = {p.stem for p in ROOT.glob("*.py")}
    assert top_files == (SCRIPTS | READ_BESIDE_THE_SCRIPTS) & top_files == top_files
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "gptkit",
        "data",
    }


def test_model_py_imports_nothing_of_ours():
    # the notes' model reads no files and runs no CPU kernels: torch alone, as nanoGPT's model.py
    assert GRAPH["model"] == set(), GRAPH["model"]
    assert GRAPH["recurrent"] <= {"model"}, GRAPH["recurrent"]


def test_base_is_the_ground_floor_of_the_package():
    assert GRAPH["gptkit.base"] == set()
    defined = {
        n.name
        for n in ast.parse((ROOT / "gptkit" / "base.py").read_text()).body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }
    assert {"UserError", "atomic_write", "atomic_path", "save_json", "save_figure"} <= defined


def test_no_import_cycles_not_even_through_lazy_imports():
    state = {}  # name -> "active" while on the DFS stack, "done" after

    def visit(name, stack):
        state[name] = "active"
        for dep in sorted(GRAPH[name]):
            assert state.get(dep) != "active", f"import cycle: {' -> '.join([*stack, name, dep])}"
            if dep not in state:
                visit(dep, [*stack, name])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def test_floors_scripts_over_the_package_over_the_notes_models():
    """No folder-level cycle: scripts (and data/) stand on gptkit, gptkit stands on model.py and
    recurrent.py, and nothing below ever imports what stands above it."""
    for name in SCRIPTS:
        assert not GRAPH[name] & SCRIPTS, f"{name} imports the script(s) {GRAPH[name] & SCRIPTS}"
    for name in LIBRARY:
        above = {dep for dep in GRAPH[name] if dep in SCRIPTS or dep.startswith("data")}
        assert not above, f"{name} imports {above}, which stand above the package"
        assert GRAPH[name] <= LIBRARY | READ_BESIDE_THE_SCRIPTS, (name, GRAPH[name])
    data_modules = {name for name in MODULES if name.startswith("data.")}
    for name in data_modules:  # data/ prepares data: it never builds a model or reads a checkpoint
        assert GRAPH[name] <= data_modules | {
            "gptkit.base",
            "gptkit.configurator",
            "gptkit.prepare",
            "gptkit.tokenizer",
        }, (name, GRAPH[name])


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_catch_all_except_in_product_code(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ExceptHandler):
            caught = (
                []
                if node.type is None
                else node.type.elts
                if isinstance(node.type, ast.Tuple)
                else [node.type]
            )
            names = {c.id for c in caught if isinstance(c, ast.Name)}
            assert node.type is not None and not names & {"Exception", "BaseException"}, (
                f"{path.name}:{node.lineno}"
            )


def test_train_py_reads_top_down_the_loop_near_the_top():
    tree = ast.parse((ROOT / "train.py").read_text())
    defs = {n.name: n.lineno for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert defs["main"] < 200 and defs["train_loop"] < 200, defs


LITERALS = (ast.Dict, ast.List, ast.Tuple, ast.Set)
FMT_SKIP = "# fmt" + ": skip"  # spelled in two so that this file does not carry the marker


@pytest.mark.parametrize(
    "path", PRODUCT + sorted((ROOT / "tests").glob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_fmt_skip_only_on_literal_tables(path):
    """ruff formats every line; its skip marker stays only on a statement that assigns a literal
    table."""
    source = path.read_text()
    skipped = {i + 1 for i, line in enumerate(source.splitlines()) if FMT_SKIP in line}
    tables = {
        node.end_lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, LITERALS)
    }
    assert skipped <= tables, f"{path.name}: {FMT_SKIP} on lines {sorted(skipped - tables)}"


def test_the_readme_python_example_prints_what_the_readme_says(tmp_path):
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    printed = re.search(r"prints\n\n```\n(.*?)```", readme, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
