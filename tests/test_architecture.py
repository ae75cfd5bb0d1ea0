"""Guards: the direction of imports, pure cost model modules, and the public contract."""

from __future__ import annotations

import ast

import pytest

from planner.cli import app
from planner.plan import SCHEMA_VERSION, Plan, dump_plan
from tests.conftest import REPO

PACKAGE = REPO / "planner"

# A module may import only modules of a lower layer (STYLE.md: cli -> ... -> units).
LAYERS = {
    "planner.units": 0, "planner.errors": 0,
    "planner.gpus": 1, "planner.model": 1, "planner.schema": 1, "planner.nccl_tests": 1,
    "planner.topo": 1, "planner.cost.kernels": 0,
    "planner.catalog": 2, "planner.hardware": 2, "planner.parallel": 2,
    "planner.memory": 3, "planner.model_io": 3, "planner.hardware_io": 3,
    "planner.cost": 3, "planner.cost.flops": 3, "planner.cost.pipeline": 3,
    "planner.cost.compute": 3, "planner.cost.comm": 3, "planner.cost.step": 4,
    "planner.advice": 4, "planner.plan": 4,
    "planner.search": 1, "planner.search.partition": 1, "planner.search.chunking": 1,
    "planner.search.space": 3,
    "planner.search.solver": 5, "planner.search.explain": 6,
    "planner.calibration": 5, "planner.heldout": 6,
    "planner.emit.megatron": 3, "planner.emit.torchtitan": 3, "planner.emit.deepspeed": 3,
    "planner.emit.launch": 3, "planner.emit": 5,
    "planner.importers.shell": 1, "planner.importers.imported": 3,
    "planner.importers.megatron": 4, "planner.importers.deepspeed": 4,
    "planner.importers.torchtitan": 4, "planner.importers": 5,
    "planner.cli": 7, "planner.cli.render": 7,
}
# Pure functions of frozen inputs: no file, network or environment access.
PURE = ("planner.units", "planner.gpus", "planner.model", "planner.catalog", "planner.hardware",
        "planner.parallel", "planner.memory", "planner.advice", "planner.cost.flops",
        "planner.cost.pipeline", "planner.cost.compute", "planner.cost.comm",
        "planner.cost.kernels",
        "planner.cost.step", "planner.nccl_tests", "planner.topo",
        "planner.search.partition", "planner.search.chunking", "planner.search.space",
        "planner.search.explain", "planner.heldout",
        "planner.emit.megatron", "planner.emit.torchtitan", "planner.emit.launch",
        "planner.importers.shell", "planner.importers.megatron",
        "planner.importers.torchtitan", "planner.importers.deepspeed")
IO_MODULES = {"os", "pathlib", "json", "yaml", "importlib", "subprocess", "socket", "shutil"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        if name == "planner" or name.endswith("__main__"):
            continue
        out[name] = ast.parse(path.read_text())
    return out


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_module_has_a_layer() -> None:
    assert set(_modules()) == set(LAYERS)


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_imports_flow_one_way(module: str) -> None:
    tree = _modules()[module]
    for imported in _imports(tree):
        if imported.startswith("planner.") and imported in LAYERS:
            ok = LAYERS[imported] < LAYERS[module] or (
                module.startswith("planner.cli") and imported.startswith("planner.cli"))
            assert ok, f"{module} imports {imported} from a layer above or beside it"
        if not module.startswith("planner.cli"):
            assert imported.split(".")[0] not in ("typer", "rich"), f"{module} imports {imported}"


@pytest.mark.parametrize("module", PURE)
def test_cost_model_is_pure(module: str) -> None:
    tree = _modules()[module]
    assert not {i.split(".")[0] for i in _imports(tree)} & IO_MODULES, module
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("print", "open", "input", "exit"), module


# ---- the public contract (DESIGN.md): add freely, never rename --------------------------

def _options(command: str) -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {opt for param in cmd.params for opt in getattr(param, "opts", [])}


@pytest.mark.parametrize(("command", "required"), [
    ("estimate", {"--model", "--cluster", "--global-batch", "--seq-len", "--tp", "--pp", "--dp",
                  "--cp", "--ep", "--vpp", "--mbs", "--recompute", "--zero",
                  "--sequence-parallel", "--vocab-strategy", "--precision", "--format", "-o"}),
    ("check", {"--cluster", "--format", "--headroom"}),
    ("models", {"--format"}),
    ("profiles", {"--format"}),
    ("validate", {"--format"}),
])
def test_cli_options_are_frozen(command: str, required: set[str]) -> None:
    assert required <= _options(command)


def test_plan_schema_keys_are_frozen() -> None:
    from planner.catalog import BUILTIN_MODELS
    from planner.parallel import ParallelConfig

    plan = Plan(model=BUILTIN_MODELS["llama3-8b"], model_ref="llama3-8b", cluster_ref="x",
                cluster_sha256="0", config=ParallelConfig(global_batch=8))
    data = plan.to_dict()
    assert list(data)[:2] == ["schema_version", "planner_version"]
    assert data["schema_version"] == SCHEMA_VERSION
    assert {"inputs", "model", "config", "headroom_frac"} <= set(data)
    assert {"tp", "pp", "dp", "cp", "ep", "vpp", "mbs", "global_batch", "seq_len", "recompute",
            "zero", "sequence_parallel"} <= set(data["config"])
    assert dump_plan(plan).startswith("schema_version:")


def test_held_out_data_reaches_only_the_report() -> None:
    """planner/data/heldout.yaml is the check on the calibration: only `planner validate`
    reads it (through planner.heldout); no cost-model, calibration or bench code may, so no
    constant can be derived from it."""
    literal = ('"heldout.yaml"', "'heldout.yaml'")  # the file name as code, not in prose
    readers = sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py")
                     if any(q in p.read_text() for q in literal))
    assert readers == ["planner/cli/__init__.py"]
    assert not any("heldout" in p.read_text() for p in (REPO / "bench").rglob("*.py"))
