"""Plan files: round trip, byte stability, and errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from planner.catalog import BUILTIN_MODELS
from planner.errors import InputError
from planner.parallel import Framework, ParallelConfig, Recompute, VocabStrategy
from planner.plan import SCHEMA_VERSION, Plan, dump_plan, load_plan, write_plan

CONFIG = ParallelConfig(tp=8, pp=4, dp=4, vpp=5, mbs=1, global_batch=512, seq_len=8192,
                        recompute=Recompute.SELECTIVE, zero=1, sequence_parallel=True,
                        vocab_strategy=VocabStrategy.BASELINE)


def _plan() -> Plan:
    return Plan(model=BUILTIN_MODELS["llama3-70b"], model_ref="llama3-70b",
                cluster_ref="dgx-h100", cluster_sha256="ab" * 32, config=CONFIG,
                headroom_frac=0.05, predictions=(("memory", {"peak_bytes": 1.5}),))


def test_schema_version_first_and_round_trip(tmp_path: Path) -> None:
    text = dump_plan(_plan())
    assert text.splitlines()[0] == f"schema_version: {SCHEMA_VERSION}"
    path = tmp_path / "plan.yaml"
    write_plan(_plan(), path, force=False)
    back = load_plan(path)
    assert back.config == CONFIG
    assert back.model == BUILTIN_MODELS["llama3-70b"]
    assert back.cluster_ref == "dgx-h100" and back.headroom_frac == 0.05


def test_every_configuration_field_is_written_and_read() -> None:
    """A plan file carries every ParallelConfig field (to_dict) and the reader accepts every
    key it writes: a field added to the configuration cannot be dropped from plan files or
    refused when they are read back."""
    from planner.plan import _CONFIG_KEYS
    fields = {f.name for f in dataclasses.fields(ParallelConfig)}
    written = set(CONFIG.to_dict())
    assert fields <= written, fields - written
    assert written <= set(_CONFIG_KEYS), written - set(_CONFIG_KEYS)


def test_layout_lists_each_stage_chunks() -> None:
    """llama3-70b, pp 4, vpp 5: 20 chunks of 4 layers; stage 0 holds model chunks 0, 4, 8, ..."""
    layout = _plan().to_dict()["layout"]["stages"]
    assert [s["num_layers"] for s in layout] == [20, 20, 20, 20]
    assert layout[0]["chunks"][:2] == [[0, 3], [16, 19]]


def test_same_plan_same_bytes() -> None:
    assert dump_plan(_plan()) == dump_plan(_plan())


def test_no_silent_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("mine\n")
    with pytest.raises(InputError, match="not overwriting"):
        write_plan(_plan(), path, force=False)
    assert path.read_text() == "mine\n"
    write_plan(_plan(), path, force=True)
    assert load_plan(path).config == CONFIG


@pytest.mark.parametrize(("edit", "expected"), [
    (("tp: 8", "tp: two"), "config.tp: expected an integer >= 1, got 'two'"),
    (("schema_version: 1", "schema_version: 99"), "newer than this planner"),
    (("recompute: selective", "recompute: some"), "config.recompute: expected one of"),
    (("num_layers: 80", "num_layers: -80"), "model: num_layers"),
    (("zero: 1", "zeroo: 1"), "config.zeroo: unknown key (did you mean 'zero'?)"),
])
def test_plan_errors_name_file_and_field(write: Callable[[str, str], Path],
                                         edit: tuple[str, str], expected: str) -> None:
    text = dump_plan(_plan())
    assert edit[0] in text
    path = write("plan.yaml", text.replace(edit[0], edit[1], 1))
    with pytest.raises(InputError) as info:
        load_plan(path)
    messages = " | ".join(info.value.problems) or str(info.value)
    assert expected in messages and "plan.yaml" in messages


def test_chunk_layout_round_trips(tmp_path: Path) -> None:
    """An interleaved layout with uneven chunks (search.chunking) survives the plan file."""
    chunks = (4, 4, 4, 2, 4, 3, 4, 4, 4, 4, 4, 5, 4, 5, 4, 5, 3, 5, 5, 3)
    plan = dataclasses.replace(_plan(), config=dataclasses.replace(CONFIG,
                                                                   layers_per_chunk=chunks))
    path = tmp_path / "plan.yaml"
    write_plan(plan, path, force=False)
    back = load_plan(path)
    assert back.config.layers_per_chunk == chunks
    stages = plan.to_dict()["layout"]["stages"]
    assert [s["num_layers"] for s in stages] == [19, 21, 21, 19]  # chunk k on stage k % 4


def test_dtype_flags_round_trip_and_default_off(tmp_path: Path) -> None:
    """fp8_param_gather, grad_reduce_in_bf16, deterministic, bf16_layers, eager,
    fused_rms_norm, compiled_loss and document_tokens survive a plan file; a plan written
    before they existed (keys absent) reads them as Megatron without the flags and current
    PyTorch and torchtitan (fused norm, compiled loss, one document per sequence)."""
    import yaml

    from planner.parallel import Precision
    lean = dataclasses.replace(CONFIG, precision=Precision.FP8, fp8_param_gather=True,
                               grad_reduce_in_bf16=True, deterministic=True,
                               bf16_layers=(1, 1), gradient_accumulation_fusion=False)
    titan = dataclasses.replace(CONFIG, framework=Framework.TORCHTITAN, zero=3, eager=True,
                                fused_rms_norm=False, compiled_loss=False, document_tokens=1500)
    titan_path = tmp_path / "titan.yaml"
    write_plan(dataclasses.replace(_plan(), config=titan), titan_path, force=False)
    assert load_plan(titan_path).config == titan
    path = tmp_path / "plan.yaml"
    write_plan(dataclasses.replace(_plan(), config=lean), path, force=False)
    assert load_plan(path).config == lean
    data = yaml.safe_load(path.read_text())
    for key in ("fp8_param_gather", "grad_reduce_in_bf16", "deterministic", "bf16_layers",
                "eager", "fused_rms_norm", "compiled_loss", "gradient_accumulation_fusion",
                "document_tokens"):
        del data["config"][key]
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(data, sort_keys=False))
    back = load_plan(old).config
    assert not back.fp8_param_gather and not back.grad_reduce_in_bf16
    assert not back.deterministic and back.bf16_layers == (0, 0) and not back.eager
    assert back.gradient_accumulation_fusion and back.fused_rms_norm and back.compiled_loss
    assert back.document_tokens is None  # one document per sequence


def test_a_plan_without_overlap_param_gather_follows_overlap_grad_reduce(
        tmp_path: Path) -> None:
    """A plan written before overlap_param_gather existed reads it as its overlap_grad_reduce
    (Megatron overlaps the gather only beside the reduction), so an unoverlapped plan still
    loads; given apart, it survives the file and reaches the launch."""
    import yaml

    from planner.emit.megatron import megatron_args
    for grads in (True, False):
        data = yaml.safe_load(dump_plan(dataclasses.replace(
            _plan(), config=dataclasses.replace(CONFIG, overlap_grad_reduce=grads,
                                                overlap_param_gather=grads))))
        del data["config"]["overlap_param_gather"]
        old = tmp_path / f"old-{grads}.yaml"
        old.write_text(yaml.safe_dump(data, sort_keys=False))
        assert load_plan(old).config.overlap_param_gather is grads
    apart = dataclasses.replace(CONFIG, overlap_param_gather=False)  # zero 1
    path = tmp_path / "apart.yaml"
    write_plan(dataclasses.replace(_plan(), config=apart), path, force=False)
    back = load_plan(path).config
    assert back == apart
    args = megatron_args(_plan().model, back)
    assert "--overlap-grad-reduce" in args and "--overlap-param-gather" not in args
    assert "--overlap-param-gather" in megatron_args(_plan().model, CONFIG)


def test_recompute_modules_round_trip_and_reach_the_launch(tmp_path: Path) -> None:
    """A plan's recompute_modules survive the file (absent: Megatron's default core_attn), a
    wrong entry is a field error, and the Megatron launch names them (only when they are not
    the default)."""
    import yaml

    from planner.emit.megatron import megatron_args
    modules = dataclasses.replace(CONFIG, recompute=Recompute.SELECTIVE,
                                  recompute_modules=("core_attn", "mlp"))
    path = tmp_path / "plan.yaml"
    write_plan(dataclasses.replace(_plan(), config=modules), path, force=False)
    assert load_plan(path).config.recompute_modules == ("core_attn", "mlp")
    data = yaml.safe_load(path.read_text())
    del data["config"]["recompute_modules"]
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_plan(old).config.recompute_modules == ("core_attn",)
    data["config"]["recompute_modules"] = "mlp"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(InputError, match="recompute_modules"):
        load_plan(bad)
    plan = _plan()
    args = " ".join(megatron_args(plan.model, modules))
    assert "--recompute-granularity selective --recompute-modules core_attn mlp" in args
    default = " ".join(megatron_args(plan.model, dataclasses.replace(
        modules, recompute_modules=("core_attn",))))
    assert "--recompute-modules" not in default
