"""Helpers shared by the emit tests and the framework tests: plans and a recording torchrun."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from planner.model import ModelSpec
from planner.parallel import ParallelConfig
from planner.plan import Plan


def plan_of(model: ModelSpec, cluster: str = "dgx-h100", **kw: object) -> Plan:
    cfg = ParallelConfig(**kw)  # type: ignore[arg-type]
    assert cfg.problems(model) == ()
    return Plan(model=model, model_ref=model.name, cluster_ref=cluster, cluster_sha256="",
                config=cfg)


def stub_torchrun(tmp_path: Path, program: str = "torchrun") -> dict[str, str]:
    """A `torchrun` (or `program`) on PATH that records its arguments as JSON instead of
    launching."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / program
    stub.write_text('#!/usr/bin/env python3\nimport json, os, sys\n'
                    'json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in '
                    '("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", '
                    '"CUDA_DEVICE_MAX_CONNECTIONS")}}, open(os.environ["STUB_OUT"], "w"))\n')
    stub.chmod(0o755)
    out = tmp_path / "torchrun.json"
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_OUT": str(out)}


def run_launch(directory: Path, tmp_path: Path, script: str = "launch_torchrun.sh",
               program: str = "torchrun", **env: str) -> dict[str, object]:
    """Runs an emitted launch script with a recording `program`; its arguments."""
    full = {**os.environ, **stub_torchrun(tmp_path, program), **env}
    done = subprocess.run(["bash", str(directory / script)], env=full, check=True,
                          capture_output=True, text=True)
    assert done.stderr == "", done.stderr  # e.g. a `cat` of a missing file
    result: dict[str, object] = json.loads(Path(full["STUB_OUT"]).read_text())
    return result
