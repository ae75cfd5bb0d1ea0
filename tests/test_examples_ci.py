"""examples/ci: the workflow's `planner check` steps pass on the shipped plan and launch, and
fail (exit 1) once the launch is changed so that it would not fit."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CI = REPO / "examples" / "ci"


def _check_steps() -> list[list[str]]:
    workflow = yaml.safe_load((CI / "planner-check.yml").read_text())
    steps = workflow["jobs"]["fits-in-memory"]["steps"]
    runs = [shlex.split(s["run"]) for s in steps if "planner check" in s.get("run", "")]
    assert len(runs) == 2
    return [r[1:] for r in runs]  # drop the program name


def test_workflow_steps_pass_on_the_shipped_files(
        run_cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the workflow runs from the repository root
    for args in _check_steps():
        code, _, err = run_cli(*args)
        assert code == 0, (args, err)


def test_workflow_fails_when_the_launch_stops_fitting(
        run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    script = (CI / "pretrain_llama3_70b.sh").read_text()
    grown = script.replace("--micro-batch-size 1", "--micro-batch-size 4").replace(
        "    --recompute-activations\n", "")
    assert grown != script
    changed = tmp_path / "pretrain_llama3_70b.sh"
    changed.write_text(grown)
    (megatron,) = [a for a in _check_steps() if "--from" in a]
    args = [str(changed) if a.endswith("pretrain_llama3_70b.sh") else a for a in megatron]
    code, out, err = run_cli(*args)
    assert code == 1, err
    assert "stage 0 by" in " ".join(out.split())  # the overflow, named per stage
