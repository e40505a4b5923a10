"""The promises about the code's shape, checked so they cannot drift: sizes a reader meets first, one floor under
everything, no import cycles (lazy imports included), no script leaning on another, errors raised as UserError
where they are found, and train.py in pieces a reader takes in at once."""

import ast

import pytest
from conftest import ROOT

PRODUCT = sorted(p for p in ROOT.rglob("*.py") if not {"tests", ".venv", "wandb"} & set(p.relative_to(ROOT).parts))
SCRIPTS = {"train", "sample", "attention", "bench", "long_range"} | {
    ".".join(p.relative_to(ROOT).with_suffix("").parts) for p in ROOT.glob("data/*/prepare.py")
}


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in PRODUCT}


def project_imports(path):
    """The project modules a file imports anywhere in it (top level, inside functions, `from data import x` too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in MODULES}
    return found - {module_name(path)}


GRAPH = {name: project_imports(path) for name, path in MODULES.items()}


def test_model_py_is_the_notes_plus_one_gpt_in_one_sitting():
    source = (ROOT / "model.py").read_text()
    assert source.count("\n") <= 450
    gpt = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "GPT")
    assert gpt.end_lineno - gpt.lineno + 1 <= 160
    # the model reads no files and runs no CPU kernels: only torch and the two ground modules it builds on
    assert GRAPH["model"] <= {"base", "sampling"}, GRAPH["model"]


def test_readme_is_a_front_door_and_performance_notes_stay_current():
    assert len((ROOT / "README.md").read_text()) <= 12_000
    assert len((ROOT / "docs" / "performance.md").read_text()) <= 15_000
    assert len((ROOT / "docs" / "training.md").read_text()) <= 15_000


def test_base_is_the_ground_floor():
    assert GRAPH["base"] == set()
    assert {"UserError", "atomic_write", "atomic_path", "save_json"} <= {
        n.name for n in ast.parse((ROOT / "base.py").read_text()).body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }


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


def test_scripts_stand_on_the_library_never_on_each_other():
    for name in SCRIPTS:
        assert not GRAPH[name] & SCRIPTS, f"{name} imports the script(s) {GRAPH[name] & SCRIPTS}"
    data_modules = {name for name in MODULES if name.startswith("data.")}
    for name in data_modules:  # data/ prepares data: it builds on the ground floor, never on models or checkpoints
        assert GRAPH[name] <= data_modules | {"base", "configurator"}, (name, GRAPH[name])


@pytest.mark.parametrize("path", PRODUCT, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_catch_all_except_in_product_code(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ExceptHandler):
            caught = [] if node.type is None else node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            names = {c.id for c in caught if isinstance(c, ast.Name)}
            assert node.type is not None and not names & {"Exception", "BaseException"}, f"{path.name}:{node.lineno}"


def test_train_py_functions_are_short_with_few_parameters():
    for node in ast.walk(ast.parse((ROOT / "train.py").read_text())):
        if isinstance(node, ast.FunctionDef):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            assert node.end_lineno - node.lineno + 1 <= 60, node.name
            assert len([a for a in arguments if a.arg != "self"]) <= 6, node.name
