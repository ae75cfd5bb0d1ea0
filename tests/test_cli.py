"""The command line: JSON contract, exit codes, plan files, and bad input (exit 2)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO

Run = Callable[..., tuple[int, str, str]]
Write = Callable[[str, str], Path]

BASE = ("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64",
        "--seq-len", "8192", "--zero", "1")


def test_estimate_json_follows_design(run_cli: Run) -> None:
    code, out, err = run_cli(*BASE, "--tp", "2", "--dp", "8", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"config", "memory", "time"}
    for key in ("tp", "pp", "dp", "cp", "ep", "vpp", "mbs", "global_batch", "seq_len",
                "recompute", "zero", "sequence_parallel"):
        assert key in data["config"]
    assert data["config"]["sequence_parallel"] is True  # default on with tp > 1
    memory = data["memory"]
    assert {"peak_bytes", "capacity_bytes", "fits", "stages"} <= set(memory)
    assert len(memory["stages"]) == data["config"]["pp"]
    for stage in memory["stages"]:
        assert {"stage", "num_layers", "weights_bytes", "gradients_bytes", "optimizer_bytes",
                "activations_bytes", "allocated_bytes", "reserved_bytes",
                "peak_bytes"} <= set(stage)
        assert stage["allocated_bytes"] < stage["reserved_bytes"] < stage["peak_bytes"]
    assert memory["fits"] is True
    time = data["time"]
    assert {"iteration_s", "tokens_per_s", "model_tflops_per_gpu", "mfu", "hfu",
            "breakdown", "calibrated"} <= set(time)
    assert time["tokens_per_s"] == pytest.approx(64 * 8192 / time["iteration_s"])
    assert 0 < time["mfu"] <= time["hfu"] < 1
    assert time["calibrated"] is False and "not validated" in err  # H100: warned



def test_attention_kernel_is_priced_and_kept_in_the_plan(run_cli: Run, tmp_path: Path) -> None:
    """On an H100, FlashAttention-2 (older PyTorch's SDPA pick) makes the step slower than the
    default cuDNN kernel; the choice goes into the plan file and back."""
    times = {}
    for kernel in ("auto", "fa2"):
        plan = tmp_path / f"{kernel}.yaml"
        code, out, err = run_cli(*BASE, "--tp", "2", "--dp", "8", "--attention-kernel", kernel,
                                 "--format", "json", "-o", str(plan))
        assert code == 0, err
        data = json.loads(out)
        assert data["config"]["attention_kernel"] == kernel
        times[kernel] = data["time"]["iteration_s"]
        code, out, err = run_cli("estimate", str(plan), "--format", "json")
        assert code == 0, err
        assert json.loads(out)["config"]["attention_kernel"] == kernel
        assert json.loads(out)["time"]["iteration_s"] == times[kernel]
    assert times["fa2"] > 1.03 * times["auto"]
    code, _, err = run_cli(*BASE, "--attention-kernel", "fa3")
    assert code == 2 and "fa3" in err

def test_calibrated_gpu_has_no_warning(run_cli: Run) -> None:
    code, out, err = run_cli("estimate", "--model", "gpt3-175b", "--cluster", "selene",
                             "--global-batch", "1536", "--seq-len", "2048", "--tp", "8",
                             "--pp", "8", "--dp", "24", "--vpp", "3", "--zero", "1",
                             "--format", "json")
    assert code == 0 and json.loads(out)["time"]["calibrated"] is True and err == ""


def test_estimate_table_and_remedies(run_cli: Run) -> None:
    code, out, _ = run_cli(*BASE, "--mbs", "4", "--dp", "8")
    assert code == 0
    assert "does not fit" in out and "what would help" in out
    assert "--recompute full" in out


def test_dp_defaults_to_the_whole_cluster(run_cli: Run) -> None:
    code, out, _ = run_cli("estimate", "--model", "llama3-8b", "--cluster",
                           str(REPO / "examples/cluster-minimal.yaml"), "--global-batch", "128",
                           "--seq-len", "4096", "--tp", "8", "--format", "json")
    assert code == 0
    assert json.loads(out)["config"]["dp"] == 16


def test_plan_written_then_checked(run_cli: Run, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    code, _, err = run_cli(*BASE, "--tp", "2", "--dp", "8", "-o", str(plan))
    assert code == 0 and plan.exists() and "wrote" in err
    first = plan.read_bytes()
    code, _, _ = run_cli(*BASE, "--tp", "2", "--dp", "8", "-o", str(plan), "--force")
    assert code == 0 and plan.read_bytes() == first  # byte-identical for the same inputs
    code, out, _ = run_cli("check", str(plan), "--format", "json")
    assert code == 0 and json.loads(out)["memory"]["fits"] is True
    code, out, _ = run_cli("check", str(plan), "--headroom", "0.9")
    assert code == 1 and "does not fit" in out
    code, out, _ = run_cli("check", str(plan), "--cluster", "rtx4090-8x-pcie",
                           "--format", "json")
    assert code == 2  # the plan needs 16 GPUs


def test_check_fails_with_numbers_and_remedies(run_cli: Run, tmp_path: Path) -> None:
    plan = tmp_path / "big.yaml"
    run_cli(*BASE, "--dp", "8", "--mbs", "8", "-o", str(plan))
    code, out, _ = run_cli("check", str(plan), "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["memory"]["fits"] is False
    assert data["remedies"] and data["remedies"][0]["change"]
    code, out, _ = run_cli("check", str(plan))
    assert code == 1 and "stage 0 by" in out and "GiB" in out


def test_estimate_plan_file(run_cli: Run, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    run_cli(*BASE, "--tp", "2", "--dp", "8", "-o", str(plan))
    code, out, _ = run_cli("estimate", str(plan), "--format", "json")
    assert code == 0 and json.loads(out)["config"]["tp"] == 2


def test_models_and_profiles(run_cli: Run) -> None:
    code, out, _ = run_cli("models", "--format", "json")
    names = {m["name"]: m for m in json.loads(out)}
    for name in ("gpt-1.7b", "gpt-3.6b", "gpt-7.5b", "gpt-18.4b", "gpt-39.1b", "gpt-76.1b",
                 "gpt-145.6b", "gpt-310.1b", "gpt-529.6b", "gpt-1t", "gpt3-175b", "llama2-7b",
                 "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3-405b",
                 "mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b",
                 "deepseek-v3", "nemotron4-340b", "bloom-176b"):
        assert names[name]["num_params"] > 0 and names[name]["num_active_params"] > 0
    assert code == 0
    code, out, _ = run_cli("models")
    assert code == 0 and "deepseek-v3" in out
    code, out, _ = run_cli("profiles", "--format", "json")
    assert code == 0 and {p["name"] for p in json.loads(out)} >= {"dgx-h100", "selene"}


def test_validate(run_cli: Run) -> None:
    code, out, _ = run_cli("validate", "--format", "json")
    report = json.loads(out)["memory"]
    assert code == 0 and report["num_cases"] >= 90 and report["mean_abs_error_frac"] < 0.1
    groups = {g["group"]: g for g in json.loads(out)["time"]["groups"]}
    assert sum(g["num_cases"] for g in groups.values()) == json.loads(out)["time"]["num_cases"]
    a100 = groups["Megatron-LM (papers), real size, a100-sxm4-80gb"]  # the calibrated group
    assert a100["num_cases"] >= 25 and a100["median_abs_error_frac"] <= 0.06  # test_step
    real = json.loads(out)["time"]["real_size"]  # the summary counts exactly those groups
    assert real["num_cases"] == sum(g["num_cases"] for name, g in groups.items()
                                    if "real size" in name)
    assert "real_size" not in report  # memory cases carry no size group
    heldout = json.loads(out)["heldout"]  # reported apart from the calibration cases
    assert heldout["num_cases"] == 17 and not heldout["skipped"]
    # the figures estimate's warning quotes are the report's
    from planner.cli import VALIDATED
    cases = json.loads(out)["time"]["cases"]
    hopper = [c["error_frac"] for c in cases if "real size" in c["group"]
              and ("h100" in c["group"] or "h200" in c["group"])]
    assert VALIDATED["real_size_h100_h200_cases"] == len(hopper)
    assert VALIDATED["real_size_h100_h200_too_fast"] == sum(e < 0 for e in hopper)
    assert VALIDATED["real_size_h100_h200_worst_fast"] == round(-min(hopper), 2)
    assert VALIDATED["real_size_h100_h200_median"] == round(
        statistics.median(abs(e) for e in hopper), 2)
    assert VALIDATED["toy_max"] == round(max(g["max_abs_error_frac"] for g in groups.values()
                                             if "toy" in g["group"]), 2)
    assert VALIDATED["a100_median"] == round(a100["median_abs_error_frac"], 3)
    moe = [c["error_frac"] for c in heldout["cases"] if "qwen3" in c["id"]]
    assert VALIDATED["heldout_moe_cases"] == len(moe)
    assert VALIDATED["heldout_moe_worst_fast"] == round(-min(moe), 2)
    assert VALIDATED["heldout_moe_worst_slow"] == round(max(moe), 2)
    held_memory = json.loads(out)["heldout_memory"]["cases"]
    assert len(held_memory) == 8  # torchtitan's reserved peaks
    titan_pp = [c["error_frac"] for c in held_memory if "_pp8" in c["id"]]
    assert VALIDATED["heldout_titan_pp_cases"] == len(titan_pp)
    assert VALIDATED["heldout_titan_pp_worst_under"] == round(-min(titan_pp), 3)
    assert VALIDATED["heldout_titan_pp_beyond_margin"] == sum(
        c["predicted_bytes"] * 1.1 < c["measured_bytes"] for c in held_memory
        if "_pp8" in c["id"])


# ---- bad input: exit 2, one clear line naming file / field / fix, never a traceback ----

MODEL_OK = "name: m\nnum_layers: 4\nhidden_size: 64\nnum_attention_heads: 4\nvocab_size: 100\n"
CLUSTER_OK = ("gpu: h100-sxm5-80gb\nnum_nodes: 2\ngpus_per_node: 8\n"
              "intra_node: {bandwidth_GBps: 370}\ninter_node: {bandwidth_GBps: 47}\n")


def _estimate_with(model: str = "llama3-8b", cluster: str = "dgx-h100", *extra: str) -> tuple:
    return ("estimate", "--model", model, "--cluster", cluster, "--global-batch", "64",
            "--seq-len", "4096", *extra)


BAD_MODEL_FILES = [
    ("model.yaml", MODEL_OK.replace("num_layers: 4\n", ""), "num_layers: missing"),
    ("model.yaml", MODEL_OK.replace("64", "'64x'"), "hidden_size: expected an integer"),
    ("model.yaml", MODEL_OK + "num_query_groups: 3\n", "num_query_groups"),
    ("model.yaml", MODEL_OK + "activation: relu\n", "activation: expected one of"),
    ("model.yaml", MODEL_OK + "hiden_size: 3\n", "did you mean 'hidden_size'"),
    ("model.yaml", MODEL_OK + "moe: {num_experts: 2, top_k: 4, ffn_hidden_size: 8}\n",
     "moe.top_k"),
    ("model.yaml", "num_layers: [\n", "invalid YAML"),
    ("model.yaml", "- 1\n- 2\n", "expected a mapping"),
    ("config.json", '{"model_type": "gpt2", "n_layer": 2}', "'gpt2' is not supported"),
    ("config.json", '{"model_type": "llama", "hidden_size": 64}', "num_hidden_layers"),
    ("config.json", '{"model_type": ', "invalid JSON"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_MODEL_FILES)
def test_bad_model_file(run_cli: Run, write: Write, name: str, text: str,
                        expected: str) -> None:
    path = write(name, text)
    code, out, err = run_cli(*_estimate_with(str(path)))
    _assert_bad_input(code, out, err, expected, name)


BAD_CLUSTER_FILES = [
    (CLUSTER_OK.replace("h100-sxm5-80gb", "h100"), "unknown GPU 'h100'"),
    (CLUSTER_OK.replace("{bandwidth_GBps: 47}", "{bandwidth_GBps: 47e9}"),
     "YAML reads numbers like 450e9"),
    (CLUSTER_OK.replace("{bandwidth_GBps: 47}", "{bandwidth_GBps: -1}"),
     "inter_node.bandwidth_GBps: expected a number > 0"),
    (CLUSTER_OK.replace("num_nodes: 2", "num_nodes: 0"), "num_nodes: expected an integer >= 1"),
    (CLUSTER_OK + "gpus: 8\n", "gpus: unknown key"),
    ("schema: planner.hardware/v1\nnode_types: {}\nislands: []\n", "islands"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CLUSTER_FILES)
def test_bad_cluster_file(run_cli: Run, write: Write, text: str, expected: str) -> None:
    path = write("cluster.yaml", text)
    code, out, err = run_cli(*_estimate_with("llama3-8b", str(path), "--tp", "2"))
    _assert_bad_input(code, out, err, expected, "cluster.yaml")


BAD_FLAGS = [
    (("--tp", "3"), "tp(3) must divide num_attention_heads(32)"),
    (("--tp", "8", "--pp", "3"), "not divisible by tp(8) * pp(3) * cp(1)"),
    (("--tp", "8", "--dp", "4096"), "cluster dgx-h100 has 16384"),
    (("--dp", "3"), "global_batch(64) must be a multiple of mbs(1) * dp(3)"),
    (("--pp", "64", "--dp", "1"), "num_layers(32) < pp(64)"),
    (("--ep", "2", "--dp", "2"), "has no experts"),
    (("--zero", "3", "--pp", "2", "--dp", "2"), "zero(3) with pp(2)"),
    (("--cp", "3", "--dp", "1"), "multiple of 2 * cp(3)"),
    (("--headroom", "1.5", "--dp", "8"), "--headroom 1.5"),
    (("--vocab-strategy", "auto", "--dp", "8"), "planner search"),
    (("--layers-per-stage", "a,b", "--pp", "2", "--dp", "8"), "--layers-per-stage"),
    (("--layers-per-stage", "10,10", "--pp", "2", "--dp", "8"), "sums to 20"),
    (("--tp", "0"), "--tp 0: expected integers >= 1"),
    (("--mbs", "0", "--dp", "8"), "--mbs 0"),
]


@pytest.mark.parametrize(("flags", "expected"), BAD_FLAGS)
def test_bad_flags(run_cli: Run, flags: tuple[str, ...], expected: str) -> None:
    code, out, err = run_cli(*_estimate_with("llama3-8b", "dgx-h100", *flags))
    _assert_bad_input(code, out, err, expected)


def test_search_with_impossible_fixed_degrees(run_cli: Run) -> None:
    code, out, err = run_cli("search", "--model", "llama3-8b", "--cluster", "dgx-h100",
                             "--global-batch", "64", "--seq-len", "4096", "--tp", "3")
    _assert_bad_input(code, out, err, "satisfies the fixed degrees (tp=3)")
    assert "attention heads (32)" in err


def test_fp8_needs_fp8_hardware(run_cli: Run) -> None:
    code, out, err = run_cli(*_estimate_with("llama3-8b", "selene", "--precision", "fp8",
                                             "--dp", "8"))
    _assert_bad_input(code, out, err, "fp8 needs FP8 tensor cores")


def test_unknown_names_and_missing_files(run_cli: Run, tmp_path: Path) -> None:
    for args, expected in (
        (_estimate_with("llama-9000"), "not a built-in model name"),
        (_estimate_with("llama3-8b", "no-such-cluster"), "not a built-in profile"),
        (("check", str(tmp_path / "missing.yaml")), "no such file"),
        (("estimate", "--model", "llama3-8b"), "missing --cluster, --global-batch"),
    ):
        code, out, err = run_cli(*args)
        _assert_bad_input(code, out, err, expected)


def test_usage_errors_exit_2(run_cli: Run) -> None:
    code, _, err = run_cli(*_estimate_with("llama3-8b", "dgx-h100", "--recompute", "most"))
    assert code == 2 and "Traceback" not in err
    code, out, err = run_cli(*_estimate_with("llama3-8b", "dgx-h100", "--dp", "8",
                                             "--recompute", "selective",
                                             "--recompute-modules", "core_attn,mlp_up"))
    _assert_bad_input(code, out, err, "recompute_modules", "unknown")
    code, out, err = run_cli(*_estimate_with("llama3-8b", "dgx-h100", "--dp", "8",
                                             "--recompute", "selective",
                                             "--recompute-modules", "mlp"))
    assert code == 0 and "recompute=selective(mlp)" in out, (out, err)
    code, _, _ = run_cli("estimate", "--tp", "two")
    assert code == 2


def test_refuses_to_overwrite(run_cli: Run, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("precious\n")
    code, out, err = run_cli(*_estimate_with("llama3-8b", "dgx-h100", "--dp", "8", "-o",
                                             str(plan)))
    _assert_bad_input(code, out, err, "not overwriting")
    assert plan.read_text() == "precious\n"


def test_bad_plan_file(run_cli: Run, write: Write) -> None:
    path = write("plan.yaml", "schema_version: 1\ninputs: {}\nconfig: {tp: 0}\n")
    code, out, err = run_cli("check", str(path))
    _assert_bad_input(code, out, err, "plan.yaml", "config.tp")


def _assert_bad_input(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and out == ""
    assert err.startswith("error: ")
    for text in expected:
        assert text in err, err


def test_yaml_format_and_torchtitan(run_cli: Run) -> None:
    import yaml

    code, out, _ = run_cli(*BASE, "--dp", "8", "--zero", "3", "--framework", "torchtitan",
                           "--recompute", "selective", "--format", "yaml")
    data = yaml.safe_load(out)
    assert code == 0 and data["config"]["framework"] == "torchtitan"
    assert data["memory"]["fits"] is True


def test_document_tokens_price_torchtitan_block_causal_attention(run_cli: Run,
                                                                  tmp_path: Path) -> None:
    """--document-tokens shortens a torchtitan estimate's step (less attention work) and
    lands in its plan; Megatron refuses it (exit 2, naming the setting), and a plan file,
    which fixes the configuration, does not take it."""
    titan = (*BASE[:-1], "3", "--dp", "8", "--framework", "torchtitan", "--format", "json")
    code, out, err = run_cli(*titan)
    assert code == 0, err
    whole = json.loads(out)
    plan = tmp_path / "plan.yaml"
    code, out, err = run_cli(*titan, "--document-tokens", "1024", "-o", str(plan))
    assert code == 0, err
    docs = json.loads(out)
    assert docs["config"]["document_tokens"] == 1024
    assert docs["time"]["iteration_s"] < whole["time"]["iteration_s"]
    assert docs["time"]["model_tflops_per_gpu"] > whole["time"]["model_tflops_per_gpu"]
    code, out, err = run_cli(*titan[:-2], "--document-tokens", "1024")
    assert code == 0 and "MFU and HFU count the full s^2 attention" in out, err
    assert "documents of 1024 tokens computes" in out
    code, _, err = run_cli(*BASE, "--dp", "8", "--document-tokens", "1024")
    assert code == 2 and "document_tokens prices torchtitan 0.3.0" in err, err
    code, _, err = run_cli("estimate", str(plan), "--document-tokens", "512")
    assert code == 2 and "drop --document-tokens" in err, err
    # a launch states no document lengths: --from takes them beside it
    assert run_cli("emit", str(plan), "--to", "torchtitan", "-o", str(tmp_path / "l"))[0] == 0
    launch = str(tmp_path / "l" / "launch_torchrun.sh")
    code, out, err = run_cli("estimate", "--from", "torchtitan", launch, "--cluster",
                             "dgx-h100", "--model", "llama3-8b", "--document-tokens", "1024",
                             "--format", "json")
    assert code == 0, err
    assert json.loads(out)["time"]["iteration_s"] == pytest.approx(docs["time"]["iteration_s"])


def test_torchtitan_pipelines_warn_of_their_held_out_memory(run_cli: Run) -> None:
    """A torchtitan plan with pipelining prints the held-out pipeline runs' worst memory miss
    (they are the estimator's least certain); without pipelining, or on Megatron, nothing."""
    piped = ("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch",
             "64", "--seq-len", "8192", "--pp", "2", "--dp", "4", "--zero", "3")
    code, _, err = run_cli(*piped, "--framework", "torchtitan")
    assert code == 0 and "torchtitan pipelining's memory" in err, err
    code, _, err = run_cli(*piped[:-6], "--dp", "8", "--zero", "3", "--framework", "torchtitan")
    assert code == 0 and "pipelining's memory" not in err, err
    code, _, err = run_cli(*piped[:-2], "--zero", "1")
    assert code == 0 and "pipelining's memory" not in err, err


def test_moe_estimate(run_cli: Run) -> None:
    code, out, err = run_cli("estimate", "--model", "mixtral-8x7b", "--cluster", "dgx-h100",
                             "--global-batch", "256", "--seq-len", "4096", "--tp", "2",
                             "--pp", "4", "--ep", "8", "--etp", "1", "--dp", "8", "--zero", "1",
                             "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["ep"] == 8 and data["config"]["etp"] == 1
    assert data["model"]["num_active_params"] < data["model"]["num_params"]


def test_sequential_experts_flag(run_cli: Run, tmp_path: Path) -> None:
    """--no-moe-grouped-gemm: Mixtral with 4 experts per GPU at 256-token micro-batches waits
    on the host for each expert, so the step is slower; the choice goes into the plan."""
    job = ("estimate", "--model", "mixtral-8x7b", "--cluster", "dgx-h100", "--global-batch",
           "64", "--seq-len", "256", "--tp", "8", "--ep", "2", "--dp", "8", "--zero", "1",
           "--format", "json")
    code, out, err = run_cli(*job)
    assert code == 0, err
    grouped = json.loads(out)
    plan = tmp_path / "seq.yaml"
    code, out, err = run_cli(*job, "--no-moe-grouped-gemm", "-o", str(plan))
    assert code == 0, err
    sequential = json.loads(out)
    assert grouped["config"]["moe_grouped_gemm"] and not sequential["config"]["moe_grouped_gemm"]
    assert sequential["time"]["iteration_s"] > grouped["time"]["iteration_s"]
    code, out, err = run_cli("estimate", str(plan), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["config"]["moe_grouped_gemm"] is False


def test_layout_text() -> None:
    from planner.cli.render import layout_text

    assert layout_text((7, 6, 6, 6, 5)) == "7,6x3,5"
    assert layout_text((4,)) == "4"


def test_estimate_says_when_layers_wait_on_the_host(run_cli: Run) -> None:
    """Llama 3 8B at tp 8 with 1024-token micro-batches: each layer's GPU work is shorter
    than Megatron's host time per layer, and the table says so; unsharded at 8192 tokens a
    layer's GPU work outlasts it."""
    job = ("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64")
    code, out, err = run_cli(*job, "--tp", "8", "--dp", "8", "--seq-len", "1024")
    assert code == 0, err
    assert "on the host" in out
    code, out, err = run_cli(*job, "--tp", "1", "--dp", "8", "--seq-len", "8192", "--zero", "1",
                             "--recompute", "full")
    assert code == 0, err
    assert "on the host" not in out


def test_estimate_deterministic_mode(run_cli: Run) -> None:
    """--deterministic: in the configuration (JSON and the table's config line) and slower
    than the same job without it; refused where Megatron refuses it."""
    job = ("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64",
           "--seq-len", "4096", "--tp", "2", "--dp", "4")
    code, out, err = run_cli(*job, "--format", "json")
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = run_cli(*job, "--deterministic", "--format", "json")
    assert code == 0, err
    det = json.loads(out)
    assert det["config"]["deterministic"] and not plain["config"]["deterministic"]
    assert det["time"]["iteration_s"] > plain["time"]["iteration_s"]
    code, out, _ = run_cli(*job, "--deterministic")
    assert code == 0 and " megatron deterministic" in out
    code, _, err = run_cli(*job, "--deterministic", "--tp-comm-overlap")
    assert code == 2 and "tp_comm_overlap off" in err


def test_estimate_bf16_layers(run_cli: Run) -> None:
    """--bf16-layers FIRST,LAST: fp8 with its edge layers in bf16, in the configuration and no
    faster than without; a malformed pair or a bf16 run is refused with exit 2."""
    job = ("estimate", "--model", "llama3-8b", "--cluster", "dgx-h100", "--global-batch", "64",
           "--seq-len", "4096", "--tp", "2", "--dp", "4", "--precision", "fp8", "--format",
           "json")
    code, out, err = run_cli(*job)
    assert code == 0, err
    fp8 = json.loads(out)
    code, out, err = run_cli(*job, "--bf16-layers", "1,1")
    assert code == 0, err
    edges = json.loads(out)
    assert edges["config"]["bf16_layers"] == [1, 1] and fp8["config"]["bf16_layers"] == [0, 0]
    assert edges["time"]["iteration_s"] > fp8["time"]["iteration_s"]
    code, _, err = run_cli(*job, "--bf16-layers", "1")
    assert code == 2 and "--bf16-layers '1'" in err
    code, _, err = run_cli(*job[:-4], "--bf16-layers", "1,1")
    assert code == 2 and "bf16_layers needs Megatron with fp8" in err


def test_estimate_says_when_a_power_limit_slows_the_gpus(run_cli: Run) -> None:
    job = ("estimate", "--model", "llama3-8b", "--global-batch", "16", "--seq-len", "8192",
           "--dp", "8", "--zero", "3", "--framework", "torchtitan", "--recompute", "selective",
           "--mbs", "2")
    code, out, err = run_cli(*job, "--cluster", "grand-teton-h100-500w")
    assert code == 0, err
    assert "500 W of its 700 W" in out and "71%" in out
    code, out, err = run_cli(*job, "--cluster", "dgx-h100")
    assert code == 0, err
    assert " W of its " not in out


def test_tp_comm_overlap_flag(run_cli: Run) -> None:
    """--tp-comm-overlap hides TP collectives behind their GEMMs (not all of them at 4096
    tokens and tp 8), so the step is faster; without sequence parallelism it is refused, as
    Megatron refuses it."""
    job = ("estimate", "--model", "llama3-70b", "--cluster", "dgx-h100", "--global-batch", "64",
           "--seq-len", "4096", "--tp", "8", "--pp", "4", "--dp", "2", "--zero", "1",
           "--format", "json")
    code, out, err = run_cli(*job)
    assert code == 0, err
    plain = json.loads(out)["time"]["iteration_s"]
    code, out, err = run_cli(*job, "--tp-comm-overlap")
    assert code == 0, err
    assert json.loads(out)["time"]["iteration_s"] < plain
    code, _, err = run_cli(*job, "--tp-comm-overlap", "--no-sequence-parallel")
    assert code == 2 and "tp_comm_overlap needs sequence_parallel" in err
