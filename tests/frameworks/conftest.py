"""The frameworks' environment (tests/frameworks/setup.sh) and a way to ask its parsers.

`make test` builds the environment in .venv-frameworks (PLANNER_FRAMEWORKS_ENV overrides the
path). When it could not be built, every test here is skipped with the reason from the build
log; nothing else in the suite needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENV = Path(os.environ.get("PLANNER_FRAMEWORKS_ENV", REPO / ".venv-frameworks"))

Check = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]


def _skip_reason() -> str | None:
    if (ENV / ".ok").exists():
        return None
    log = ENV.parent / (ENV.name + ".log")
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    return (f"frameworks environment {ENV} not built (`make frameworks`; "
            "tests/frameworks/setup.sh)" + (": " + " | ".join(tail) if tail else ""))


@pytest.fixture(scope="session")
def framework_check() -> Check:
    """framework_check("megatron", cases) -> one result per case from check_<name>.py, run
    by the frameworks' interpreter in a fresh process."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)

    def run(name: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        env = {**os.environ, "PYTHONPATH": str(ENV / "mcore"), "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([str(ENV / "bin" / "python"), str(HERE / f"check_{name}.py")],
                              input=json.dumps({"cases": cases}), capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results: list[dict[str, Any]] = json.loads(done.stdout)
        assert len(results) == len(cases)
        return results

    return run
