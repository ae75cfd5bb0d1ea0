"""Existing launches (Megatron-LM, torchtitan, DeepSpeed) as a model and a configuration, so
that `planner estimate --from` and `planner check --from` can judge them before they run."""

from __future__ import annotations

from pathlib import Path

from planner.errors import InputError
from planner.importers.deepspeed import import_deepspeed
from planner.importers.imported import ImportedLaunch
from planner.importers.megatron import import_megatron
from planner.importers.torchtitan import import_torchtitan
from planner.model import ModelSpec
from planner.schema import read_document, read_text

FRAMEWORKS = ("megatron", "torchtitan", "deepspeed")


def import_launch(framework: str, path: Path, *, model: ModelSpec | None, dp: int | None,
                  world_size: int, seq_len: int | None) -> ImportedLaunch:
    """Read `path` as a `framework` launch. `world_size` (the cluster's GPUs) is used when
    neither the launch nor `dp` says how many replicas there are."""
    source = str(path)

    def beside(name: str) -> str | None:
        """A file a script reads with $(cat ...): taken from the script's directory."""
        candidate = path.parent / Path(name.replace("${here}", "").replace("$here", "")
                                       .lstrip("/")).name
        return candidate.read_text(errors="replace") if candidate.is_file() else None

    if framework == "megatron":
        return import_megatron(read_text(path), source, dp, world_size, model, beside)
    if framework == "torchtitan":
        return import_torchtitan(read_text(path), source, dp, world_size, model, beside)
    if framework == "deepspeed":
        if model is None or seq_len is None:
            raise InputError(f"{source}: a ds_config.json names neither the model nor the "
                             "sequence length", hint="give --model and --seq-len")
        return import_deepspeed(read_document(path), source, dp or world_size, model, seq_len)
    raise InputError(f"--from {framework}: expected one of " + ", ".join(FRAMEWORKS))


__all__ = ["FRAMEWORKS", "ImportedLaunch", "import_launch"]
