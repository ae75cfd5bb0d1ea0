"""The calibrated A100 GEMM fraction: re-derived from its source, checked on unused rows."""

from __future__ import annotations

import dataclasses

import pytest

from planner.calibration import load_measurements
from planner.cost.step import layer_passes, resolve_links
from planner.gpus import A100_IN_FRAMEWORK_MATMUL_FRAC, GPU_CATALOG
from planner.hardware_io import load_cluster
from planner.model import make_model
from planner.parallel import ParallelConfig, Recompute

CASES = {c["id"]: c for c in load_measurements("calibration.yaml")["cases"]}
GPT22 = make_model(name="gpt-22b", num_layers=48, hidden_size=6144, num_attention_heads=64,
                   vocab_size=51200, max_position_embeddings=2048)


def _layer_ms(case_id: str, frac: float | None) -> tuple[float, float]:
    """Modelled forward and backward ms of one 22B layer (tp 8, micro-batch 4) as Table 4
    measures them: the step model's own layer passes (compute plus exposed tensor-parallel
    communication; the host floor does not bind at this size)."""
    c = CASES[case_id]["config"]
    recompute = {"none": Recompute.NONE, "full": Recompute.FULL}.get(
        str(c["recompute"]), Recompute.SELECTIVE)
    cfg = ParallelConfig(tp=8, mbs=4, global_batch=4, seq_len=2048, recompute=recompute,
                         sequence_parallel=bool(c["sequence_parallel"]), flash_attention=False)
    cluster = load_cluster("selene")
    gpu = GPU_CATALOG["a100-sxm4-80gb"]
    if frac is not None:  # the A100 at this matmul fraction
        gpu = dataclasses.replace(gpu, matmul_frac=(("bf16", frac),))
    lp = layer_passes(GPT22, cfg, gpu, resolve_links(cluster, cfg), 0, recompute)
    assert lp.host_wait_s == 0.0
    return lp.forward_s * 1e3, lp.backward_s * 1e3


def test_a100_fraction_is_derived_from_table4_baseline() -> None:
    source = CASES["korthikanti_t4_22b_layer_baseline_no_recompute"]["measured"]
    target = source["per_layer_fwd_plus_bwd_ms"]
    lo, hi = 0.3, 0.95
    for _ in range(40):  # bisection on the fraction
        mid = (lo + hi) / 2
        if sum(_layer_ms("korthikanti_t4_22b_layer_baseline_no_recompute", mid)) > target:
            lo = mid
        else:
            hi = mid
    assert pytest.approx(mid, abs=0.002) == A100_IN_FRAMEWORK_MATMUL_FRAC
    assert dict(GPU_CATALOG["a100-sxm4-80gb"].matmul_frac) == {
        "bf16": A100_IN_FRAMEWORK_MATMUL_FRAC}


@pytest.mark.parametrize("case_id", [
    "korthikanti_t4_22b_layer_sequence_parallel",
    "korthikanti_t4_22b_layer_baseline_with_full_recompute",
    "korthikanti_t4_22b_layer_selective_recompute",
    "korthikanti_t4_22b_layer_selective_plus_sequence",
])
def test_table4_rows_not_used_for_calibration(case_id: str) -> None:
    """The other Table 4 rows, with the calibrated fraction: forward + backward within 8%."""
    measured = CASES[case_id]["measured"]["per_layer_fwd_plus_bwd_ms"]
    forward, backward = _layer_ms(case_id, None)
    assert forward + backward == pytest.approx(measured, rel=0.08)


@pytest.mark.parametrize(("versions", "attention", "kernel"), [
    ("torch 1963fc8 (2024-12-23), torchao eab345c", "", "fa2"),  # nightly before the PR
    ("torch 2.8.0a0+5228986c39 (NGC 25.05)", "", "fa2"),
    ("torch 2.10.0", "", "fa2"),  # the switch is in, but its cuDNN is not new enough
    ("torch 2.11.0", "", "auto"),
    ("", "flex_attention", "fa2"),
    ("", "", "auto"),
])
def test_torchtitan_cases_run_the_attention_kernel_their_pytorch_picked(
        versions: str, attention: str, kernel: str) -> None:
    from planner.calibration import _sdpa_kernel
    case = {"source": {"versions": versions}, "config": {"attention": attention}}
    assert _sdpa_kernel(case).value == kernel


@pytest.mark.parametrize(("versions", "fused"), [
    ("torch 1963fc8 (2024-12-23), torchao eab345c", False),  # nightly before the fused kernel
    ("torch 2.7.1", False),
    ("torch 2.8.0", True),
    ("", True),  # not stated: taken as recent
])
def test_eager_torchtitan_cases_run_the_rms_norm_their_pytorch_had(versions: str,
                                                                   fused: bool) -> None:
    from planner.calibration import _fused_rms_norm
    assert _fused_rms_norm({"source": {"versions": versions}}) is fused


@pytest.mark.parametrize(("versions", "compiled"), [
    ("torch 1963fc8 (2024-12-23), torchao eab345c, torchtitan 9dec370 (2024-12-26)", False),
    ("torch 38410cf9 (2025-06-14), torchao 6243040, torchtitan 820504e", True),
    ("torch 2.8.0a0+5228986c39 (NGC 25.05), torchao 0afa4c1, torchtitan e7c0cae", True),
    ("torch 2.6.0", False),
    ("", True),
])
def test_compiled_torchtitan_cases_compile_the_loss_from_april_2025(versions: str,
                                                                    compiled: bool) -> None:
    from planner.calibration import _compiled_loss
    assert _compiled_loss({"source": {"versions": versions}}) is compiled


def test_the_2412_eager_runs_price_rms_norm_op_by_op() -> None:
    """The torchtitan 2412 benchmark ran torch of 2024-12-23 (and torchtitan's own RMSNorm
    class): its eager rows run the norm op by op, its compiled rows fused."""
    from planner.calibration import reproduce_case
    measured = {c["id"]: c for c in load_measurements("measured.yaml")["cases"]}
    for case_id, fused in (("torchtitan_2412_l8b_8gpu_fsdp", False),
                           ("torchtitan_2412_l8b_8gpu_fsdp_compile", True)):
        reproduced = reproduce_case(measured[case_id])
        assert not isinstance(reproduced, str)
        assert reproduced[1].fused_rms_norm is fused


@pytest.mark.parametrize(("gpu_text", "profile"), [
    ("H100-SXM-96GB-HBM2e (Meta Grand Teton, 500 W power cap; ~95 GiB usable)",
     "grand-teton-h100-500w"),
    ("H100 (95 GiB capacity implied: 44.84 GiB = 47.19%)", "grand-teton-h100-500w"),
    ("H100-SXM5-80GB (DGX H100)", "dgx-h100"),
    ("H200 141GB", "hgx-h200"),
    ("A100-SXM4-80GB", "selene"),
    ("GB200 NVL72", None),
])
def test_cases_run_on_the_profile_of_the_gpu_they_name(gpu_text: str,
                                                        profile: str | None) -> None:
    """torchtitan's published H100 runs are on a custom 96 GB HBM2e part at 500 W, not on
    DGX H100s: their cases take that profile (its power limit and HBM bandwidth)."""
    from planner.calibration import _profile_for
    names = {"hgx-h200", "grand-teton-h100-500w", "dgx-h100", "selene"}
    chosen = _profile_for(gpu_text, {n: n for n in names})  # type: ignore[misc]
    assert chosen == profile


def test_torchtitan_throughput_cases_become_step_times() -> None:
    """torchtitan reports tokens/s per GPU as its data-parallel shard's tokens over time x
    tp x cp x pp (train.py, non_data_parallel_size), so a step is global batch x seq / (tps x
    world): 96 x 8192 / (4378 x 64) s for the 64-GPU TP8 run. Its seq is noted as the toml
    default, its TP runs sequence parallel (torchtitan's default), its row-wise fp8 runs are
    not reproduced (the planner prices tensor-wise fp8 only)."""
    from planner.calibration import load_measurements, reproduce_case, time_report
    from planner.hardware_io import load_cluster
    measured = load_measurements()
    report = time_report({"cases": []}, measured,
                         {"grand-teton-h100-500w": load_cluster("grand-teton-h100-500w")})
    by_id = {c.id: c for c in report.cases}
    case = by_id["torchtitan_2506_l8b_64gpu_fsdp8_tp8_bf16_tp"]
    assert case.measured == pytest.approx(96 * 8192 / (4378 * 64))
    assert "tokens/s per GPU" in case.note and "toml default" in case.note
    source = next(c for c in measured["cases"] if c["id"] == case.id)
    reproduced = reproduce_case(source)
    assert not isinstance(reproduced, str)
    assert reproduced[1].sequence_parallel and reproduced[1].seq_len == 8192
    skipped = dict(report.skipped)
    assert "rowwise" in skipped["torchtitan_2506_l8b_64gpu_fsdp8_tp8_fp8_rowwise_tp"]


@pytest.mark.parametrize(("value", "precision"), [
    (True, "fp8"), (False, "bf16"), (None, "bf16"), ("bf16", "bf16"),
    ("fp8_tensorwise", "fp8"), ("tensorwise + fsdp float8 all-gather", "fp8"),
])
def test_float8_field_forms(value: object, precision: str) -> None:
    from planner.calibration import _float8_precision
    assert _float8_precision(value).value == precision


def test_megatron_fp8_cases_run_fp8() -> None:
    """Megatron cases state fp8 as --fp8-format with --fp8-recipe: tensor-wise runs are fp8
    (they were reproduced as bf16), block-wise ones are skipped (not priced)."""
    from planner.calibration import load_measurements, reproduce_case
    cases = {c["id"]: c for c in load_measurements()["cases"]}
    tensorwise = reproduce_case(cases[
        "megatron_ci_gpt3_weekly_mcore_tp2_pp2_current_scaling_native_fp8_tp_pp_sp_tp_overlap_h100"])
    assert not isinstance(tensorwise, str) and tensorwise[1].precision.value == "fp8"
    assert tensorwise[1].tp_comm_overlap
    blockwise = reproduce_case(cases[
        "megatron_ci_gpt3_moe_mcore_te_tp4_ep2_etp2_pp2_scoped_cudagraph_h100"])
    assert isinstance(blockwise, str) and "blockwise" in blockwise


def test_comparisons_name_the_flags_the_planner_does_not_model() -> None:
    """A validation case run with flags the planner does not model says so in its note (what
    `estimate --from megatron` would warn about); data and optimizer flags are not listed, and
    flags it models (deferred embedding wgrad, optimizer instances, the weight-gradient adds of
    --no-gradient-accumulation-fusion) are not either."""
    from planner.calibration import memory_report, unmodelled_flags
    cases = {c["id"]: c for c in load_measurements()["cases"]}
    unfused = cases["megatron_ci_gpt3_mcore_te_tp1_pp2_resume_torch_dist_rope_embeddings_"
                    "interleaved_no_fusion_h100"]
    assert "--no-rope-fusion" in unmodelled_flags(unfused)
    fim = cases["megatron_ci_gpt3_mcore_te_tp1_pp1_dist_optimizer_fim_dataset_h100"]
    assert unmodelled_flags(fim) == ()
    deferred = cases["megatron_ci_gpt3_mcore_te_tp2_pp2_resume_torch_dist_"
                     "defer_embedding_wgrad_compute_h100"]
    assert not {"--defer-embedding-wgrad-compute", "--wgrad-deferral-limit"} & set(
        unmodelled_flags(deferred))
    instances = cases["megatron_ci_gpt3_mcore_te_tp2_pp1_resume_torch_dist_te_8experts2parallel_"
                      "multi_dist_optimizer_instances_h100"]
    assert "--num-distributed-optimizer-instances" not in unmodelled_flags(instances)
    notes = {c.id: c.note for c in memory_report(load_measurements()).cases}
    assert "not modelled: " in notes[unfused["id"]] and "--no-rope-fusion" in notes[unfused["id"]]


def test_deterministic_runs_are_read_and_marked() -> None:
    """Megatron's tests run with --deterministic-mode (NCCL_ALGO set, TE's deterministic
    algorithms) or not: the same 12-layer toy at tp 2, pp 2 took 0.194 s deterministic and
    0.118 s not. The case configuration carries the mode (priced as measured on Megatron-Core's
    own layers) and the note says what of it is not priced (Transformer Engine's kernels)."""
    from planner.calibration import _model, case_config, deterministic_note
    cases = {c["id"]: c for c in load_measurements()["cases"]}
    det = cases["megatron_ci_gpt3_mcore_te_tp2_pp2_resume_torch_dist_h100"]
    free = cases["megatron_ci_gpt3_mcore_te_tp2_pp2_cross_entropy_loss_fusion_h100"]
    assert "deterministic mode (NCCL_ALGO=Ring" in deterministic_note(det)
    assert "Transformer Engine's deterministic kernels not" in deterministic_note(det)
    assert deterministic_note(free) == ""
    assert det["measured"]["iter_time_s"] > 1.5 * free["measured"]["iter_time_s"]
    assert case_config(det, _model(det)).deterministic
    assert not case_config(free, _model(free)).deterministic


def test_restored_megatron_arguments_cover_every_reproduced_case() -> None:
    """measured.yaml drops some of each Megatron test's arguments (dropout, --deterministic-
    mode, ...); data/megatron_ci_args.yaml restores them from the test's model_config.yaml.
    Every Megatron case validate reproduces has an entry, its flags are ones the importer maps,
    and none restates a flag measured.yaml records (that one would win unseen)."""
    from planner.calibration import reproduce_case
    from planner.importers.megatron import MAPPED
    restored = {c["id"]: c for c in load_measurements("megatron_ci_args.yaml")["cases"]}
    cases = {c["id"]: c for c in load_measurements()["cases"]}
    assert set(restored) <= set(cases)
    for case_id, case in cases.items():
        if "megatron" not in str(case["config"].get("framework", "")).lower():
            continue
        if isinstance(reproduce_case(case), str) and case_id not in restored:
            continue
        assert case_id in restored, case_id
        entry = restored[case_id]
        assert entry["path"].startswith(case["source"]["path"].split("/golden")[0]), case_id
        assert set(entry["args"]) <= set(MAPPED), case_id
        assert not set(entry["args"]) & set(case["config"].get("megatron_args") or {}), case_id


def test_restored_arguments_reach_the_model_and_configuration() -> None:
    """gpt3_mcore_te_tp2_pp2_ep4_etp1_memory_speed trains without dropout (its model_config.yaml
    sets --attention-dropout and --hidden-dropout to 0.0); the 7B memory-speed test runs
    --deterministic-mode; the weekly fp8 tp-overlap test sets NCCL_ALGO without it."""
    from planner.calibration import _model, case_config, deterministic_mode
    cases = {c["id"]: c for c in load_measurements()["cases"]}
    moe = cases["megatron_ci_gpt3_mcore_te_tp2_pp2_ep4_etp1_memory_speed_h100"]
    assert (_model(moe).attention_dropout, _model(moe).hidden_dropout) == (0.0, 0.0)
    default = cases["megatron_ci_gpt3_mcore_te_tp1_pp4_vp1_h100"]  # no dropout flags: 0.1
    assert _model(default).attention_dropout == 0.1
    dense = cases["megatron_ci_gpt3_7b_tp1_pp4_memory_speed_h100"]
    assert deterministic_mode(dense) and case_config(dense, _model(dense)).deterministic
    weekly = cases["megatron_ci_gpt3_weekly_mcore_tp2_pp2_current_scaling_native_fp8_tp_pp_sp_"
                   "tp_overlap_h100"]
    assert weekly["config"]["deterministic_env"]["NCCL_ALGO"] == "Ring"
    assert not deterministic_mode(weekly)
    assert case_config(weekly, _model(weekly)).tp_comm_overlap


def test_repeatability_summarises_cases_the_planner_prices_alike() -> None:
    """Cases of one group with the same prediction are the same job to the planner: their
    measured spread (deviation from the set's median) bounds what any model of these inputs
    can reach on them. Sets of one case and other groups do not count."""
    from planner.calibration import Comparison, Report
    cases = (Comparison(id="a", measured=1.0, predicted=0.9, group="g"),
             Comparison(id="b", measured=1.2, predicted=0.9, group="g"),
             Comparison(id="c", measured=1.4, predicted=0.9, group="g"),
             Comparison(id="d", measured=5.0, predicted=0.9, group="other"),
             Comparison(id="e", measured=2.0, predicted=1.5, group="g"))
    sets, count, median, widest = Report(cases=cases, skipped=(), unit="s").repeatability()
    assert (sets, count) == (1, 3)
    assert median == pytest.approx(1.0 / 6) and widest == pytest.approx(1.0 / 6)
    assert Report(cases=cases[3:], skipped=(), unit="s").repeatability() == (0, 0, 0.0, 0.0)
