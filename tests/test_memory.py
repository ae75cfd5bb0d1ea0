"""The memory estimator against formulas, published tables and measured peaks."""

from __future__ import annotations

import dataclasses
import math

import pytest

from planner.calibration import load_measurements, memory_report
from planner.catalog import BUILTIN_MODELS
from planner.memory import (
    PrecisionPolicy,
    StageParams,
    estimate_memory,
    layer_activation_bytes,
    model_state_bytes,
    precision_policy,
    stage_params,
)
from planner.model import make_model
from planner.parallel import (
    Framework,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
    in_flight_microbatches,
    stage_layers,
)
from planner.units import GB, GiB

CALIBRATION = {c["id"]: c for c in load_measurements("calibration.yaml")["cases"]}


def _gpt(case_id: str):  # type: ignore[no-untyped-def]
    m = CALIBRATION[case_id]["model"]
    return make_model(name=m["name"], num_layers=m["layers"], hidden_size=m["hidden"],
                      num_attention_heads=m["heads"], vocab_size=m["vocab"],
                      max_position_embeddings=m["seq"])


# ---- Korthikanti et al. 2022 -------------------------------------------------------------

def test_table2_gpt_formulas_by_hand() -> None:
    """s=2048, b=1, h=64, a=4, t=2 (Korthikanti Table 2, 16-bit activations):
    no SP, no recompute: sbh(10 + 24/t + 5as/(ht)) = 131072 * (10 + 12 + 320) = 44826624;
    SP + selective: 34 sbh / t = 2228224; full recompute with SP: 2 sbh / t = 131072."""
    model = make_model(name="g", num_layers=2, hidden_size=64, num_attention_heads=4,
                       vocab_size=128, max_position_embeddings=2048)
    cfg = ParallelConfig(tp=2, seq_len=2048, global_batch=1, flash_attention=False)
    assert layer_activation_bytes(model, cfg, 0, Recompute.NONE) == 131072 * 342
    sp = dataclasses.replace(cfg, sequence_parallel=True)
    assert layer_activation_bytes(model, sp, 0, Recompute.SELECTIVE) == 34 * 131072 // 2
    assert layer_activation_bytes(model, sp, 0, Recompute.FULL) == 2 * 131072 // 2


@pytest.mark.parametrize("case_id", ["korthikanti_fig1_activation_22B",
                                     "korthikanti_fig1_activation_175B",
                                     "korthikanti_fig1_activation_530B",
                                     "korthikanti_fig1_activation_1T"])
def test_first_stage_activations_match_korthikanti(case_id: str) -> None:
    """calibration.yaml korthikanti_fig1_*: first-stage activation memory of the Table 3
    configurations, TP-only without recompute and with SP + selective recompute (analytic
    values of Korthikanti Eq. 2 / Table 2 x the interleaving factor). Exact up to rounding."""
    case = CALIBRATION[case_id]
    model = _gpt(case_id)
    c = case["config"]
    cfg = ParallelConfig(tp=c["tp"], pp=c["pp"], vpp=c["vpp"] or 1, mbs=c["micro_batch"],
                         global_batch=c["global_batch"], seq_len=model.max_position_embeddings,
                         flash_attention=False)
    layers = stage_layers(model, cfg)[0]
    in_flight = in_flight_microbatches(cfg, 0)

    def first_stage(c: ParallelConfig, mode: Recompute) -> float:
        return sum(layer_activation_bytes(model, c, i, mode) for i in layers) * in_flight / GiB

    expected = case["measured"]
    assert first_stage(cfg, Recompute.NONE) == pytest.approx(
        expected["first_stage_activation_gib_tp_only_no_recompute"], rel=1e-3)
    sp = dataclasses.replace(cfg, sequence_parallel=True)
    assert first_stage(sp, Recompute.SELECTIVE) == pytest.approx(
        expected["first_stage_activation_gib_tp_sp_selective"], rel=1e-3)


# ---- model states ------------------------------------------------------------------------

ZERO_CASES = sorted(k for k in CALIBRATION if k.startswith("zero_t1_"))


@pytest.mark.parametrize("case_id", ZERO_CASES)
def test_zero_table1(case_id: str) -> None:
    """ZeRO (Rajbhandari et al. 2020) Table 1: fp16 weights and gradients + K=12 bytes of
    Adam state per parameter, in GB per GPU, for stages 1-3 (reported to 3 digits)."""
    case = CALIBRATION[case_id]
    size = {"7p5B": 7.5e9, "128B": 128e9, "1T": 1e12}[case_id.split("_")[2]]
    dp = case["config"]["dp"]
    policy = PrecisionPolicy(weight_bytes=2, gemm_weight_bytes=2, grad_bytes=2, master_bytes=4,
                             optimizer_bytes=8)
    for stage in (1, 2, 3):
        cfg = ParallelConfig(dp=dp, zero=stage, global_batch=dp)
        w, g, o = model_state_bytes(StageParams(dense=int(size), expert=0, largest_layer=0),
                                    cfg, policy)
        reported = case["measured"][f"model_state_gb_per_gpu_stage{stage}"]
        assert (w + g + o) / GB == pytest.approx(reported, rel=0.01, abs=0.01)


def test_megatron_bytes_per_parameter() -> None:
    """Megatron theoretical_memory_usage.py: 18 bytes/param, 6 + 12/dp with the distributed
    optimizer (bf16 weights 2, fp32 gradients 4, fp32 master 4, Adam moments 8)."""
    params = StageParams(dense=1000, expert=0, largest_layer=0)
    policy = precision_policy(Precision.BF16, Framework.MEGATRON)
    assert sum(model_state_bytes(params, ParallelConfig(dp=8, global_batch=8), policy)) == 18000
    distributed = ParallelConfig(dp=8, zero=1, global_batch=8)
    assert sum(model_state_bytes(params, distributed, policy)) == 6000 + 12000 // 8


def test_experts_shard_over_ep_and_replicate_over_expert_dp() -> None:
    """Mixtral 8x7B, tp=2, ep=8, etp=1, dp=8: a GPU holds 1/8 of the experts and 1/2 of the
    dense weights; with the distributed optimizer experts shard their state over expert-dp =
    tp*dp/(ep*etp) = 2 ranks, dense weights over dp = 8."""
    model = BUILTIN_MODELS["mixtral-8x7b"]
    cfg = ParallelConfig(tp=2, dp=8, ep=8, etp=1, zero=1, global_batch=64,
                         sequence_parallel=True)
    params = stage_params(model, cfg, 0, stage_layers(model, cfg)[0])
    assert params.expert == sum(model.params.per_layer_expert) // 8
    assert cfg.expert_dp == 2
    policy = precision_policy(Precision.BF16, Framework.MEGATRON)
    _, _, optimizer = model_state_bytes(params, cfg, policy)
    assert optimizer == pytest.approx(params.dense * 12 / 8 + params.expert * 12 / 2, abs=2)


# ---- whole-stage properties ---------------------------------------------------------------

def _estimate(model_name: str, **kw: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = {"global_batch": 64, "seq_len": 4096}
    base.update(kw)
    cfg = ParallelConfig(**base)  # type: ignore[arg-type]
    assert not cfg.problems(BUILTIN_MODELS[model_name])
    return estimate_memory(BUILTIN_MODELS[model_name], cfg, 80 * GiB)


def test_levels_are_ordered_and_overheads_explicit() -> None:
    for stage in _estimate("llama3-70b", tp=8, pp=4, dp=2, sequence_parallel=True).stages:
        assert stage.allocated_bytes < stage.reserved_bytes < stage.peak_bytes
        assert stage.peak_bytes - stage.reserved_bytes == stage.margin_bytes + (
            stage.cuda_context_bytes + stage.nccl_bytes)
        assert stage.margin_bytes == pytest.approx(0.10 * stage.reserved_bytes, abs=1)
        assert stage.nccl_bytes > 0 and stage.fragmentation_bytes > 0


def test_memory_moves_in_the_expected_direction() -> None:
    def peak(**kw: object) -> int:
        return int(_estimate("llama3-8b", **kw).peak_bytes)

    assert peak(mbs=2, dp=2) > peak(mbs=1, dp=2)
    assert peak(dp=8, zero=1) < peak(dp=8, zero=0)
    assert peak(tp=2, dp=4, sequence_parallel=True) < peak(tp=2, dp=4)
    assert peak(recompute=Recompute.FULL, dp=2) < peak(dp=2)
    assert peak(cp=2, dp=2) < peak(dp=4) - 10 * GiB


def test_first_stage_of_1f1b_holds_most_activations() -> None:
    stages = _estimate("llama3-70b", tp=8, pp=4, dp=2, sequence_parallel=True).stages
    assert stages[0].activations_bytes > stages[1].activations_bytes > stages[2].activations_bytes


def test_large_vocabulary_weighs_on_the_end_stages_and_strategies_relieve_it() -> None:
    """Nemotron-4 340B (256K vocabulary) at pp=8: the LM head and logits make the last stage
    heaviest under baseline; vocab-parallel moves them onto every stage."""
    common: dict[str, object] = {"tp": 8, "pp": 8, "dp": 1, "mbs": 1,
                                 "sequence_parallel": True, "recompute": Recompute.FULL}
    base = _estimate("nemotron4-340b", **common).stages
    spread = _estimate("nemotron4-340b", vocab_strategy=VocabStrategy.VOCAB_PARALLEL,
                       **common).stages
    assert base[-1].peak_bytes > base[3].peak_bytes
    assert spread[-1].peak_bytes < base[-1].peak_bytes
    redistribute = _estimate("nemotron4-340b", vocab_strategy=VocabStrategy.REDISTRIBUTE,
                             **common).stages
    assert redistribute[-1].num_layers < base[-1].num_layers


def test_tied_embedding_copy_on_last_stage() -> None:
    """Megatron keeps a copy of a tied word embedding on the last stage when pp > 1."""
    model = BUILTIN_MODELS["gpt-1.7b"]
    cfg = ParallelConfig(pp=2, global_batch=8)
    layers = stage_layers(model, cfg)
    first = stage_params(model, cfg, 0, layers[0])
    last = stage_params(model, cfg, 1, layers[1])
    vocab = model.padded_vocab_size(1) * model.hidden_size
    assert first.dense > vocab and last.dense > vocab


# ---- measured peaks (shipped in planner/data/measured.yaml) --------------------------------

REPORT = memory_report(load_measurements())
BY_ID = {c.id: c for c in REPORT.cases}


# Measured peaks that exceed the estimate plus its margin, each using a Megatron feature the
# estimator does not model yet (README, Validation). A new entry here is a regression.
# Measured peaks beyond the fit verdict's margin, each with its cause (none since Megatron's
# deferred embedding wgrad and distributed-optimizer instances are modelled; the CUDA-graph
# case runs block-wise fp8, which is skipped).
KNOWN_UNDER_MARGIN: dict[str, str] = {}


def test_measured_summary() -> None:
    """Over every reproducible measured peak: mean |error| below 10%, median below 3%, and
    none beyond the fit verdict's margin (a 'fits' for a run that would not)."""
    assert len(REPORT.cases) >= 90
    assert REPORT.mean_abs_error_frac < 0.10
    assert REPORT.median_abs_error_frac < 0.03
    assert {c.id for c in REPORT.under_margin} <= set(KNOWN_UNDER_MARGIN)


@pytest.mark.parametrize("case_id", [
    "megatron_ci_gpt3_mcore_tp1_pp4_h100",  # allocated, last stage, unfused attention
    "megatron_ci_gpt3_mcore_tp1_pp2_h100",
    "megatron_ci_gpt3_mcore_te_tp1_pp4_vp1_h100",  # interleaved
    "megatron_ci_gpt3_mcore_te_tp1_pp4_vp1_uneven_pipeline_h100",  # uneven stages
    "megatron_ci_gpt3_mcore_te_tp2_pp2_cp2_h100",  # context parallel
    "megatron_ci_gpt3_mcore_te_tp2_pp2_mla_h100",  # MLA
    "megatron_ci_gpt3_mcore_tp2_pp2_ep2_etp2_te_4experts2parallel_h100",  # MoE with ETP
    "megatron_ci_gpt3_7b_tp4_pp1_memory_speed_h100",  # 53 GiB, a real-size layer
    "megatron_ci_gpt3_7b_tp1_pp4_memory_speed_h100",
    # embedding and loss counted as layers: uneven chunks (parallel.live_chunk_passes)
    "megatron_ci_gpt3_mcore_te_tp1_pp4_vp2_account_for_embedding_loss_in_pipeline_split_h100",
    "torchtitan_2412_l8b_8gpu_fsdp",  # reserved, FSDP2 + op-level SAC
    "torchtitan_2412_l8b_128gpu_fsdp",
    "torchtitan_2412_l8b_8gpu_fsdp2_cp4_s131072",  # FSDP2 + CP + full AC
])
def test_measured_cases_within_five_percent(case_id: str) -> None:
    assert abs(BY_ID[case_id].error_frac) < 0.05, BY_ID[case_id]


def test_attention_scores_kept_by_unfused_attention() -> None:
    """The fused softmax keeps its 16-bit output, which the value matmul saves too (2 bytes a
    score); dropout adds its mask and output (3); PyTorch's fp32 softmax, past the fused
    kernels' 16384 keys, keeps the fp32 output and its 16-bit copy (6)."""
    from planner.memory import attention_score_bytes
    llama = BUILTIN_MODELS["llama3-8b"]
    dropout = dataclasses.replace(llama, attention_dropout=0.1)
    cfg = ParallelConfig(tp=1, dp=1, global_batch=1, seq_len=4096, flash_attention=False)
    long = dataclasses.replace(cfg, seq_len=16384)
    assert [attention_score_bytes(m, c) for m in (llama, dropout) for c in (cfg, long)] == [
        2, 6, 5, 9]
    titan = dataclasses.replace(cfg, framework=Framework.TORCHTITAN)  # no dropout layers
    assert attention_score_bytes(dropout, titan) == 2


def test_uneven_chunks_count_what_each_chunk_holds() -> None:
    """With the embedding and the loss counted as pipeline layers (6 layers, pp 4, 2 chunks),
    the last rank holds 4 micro-batches of its layer chunk and one of its loss chunk: 4 layers'
    activations, not the 2.5 an even count gives."""
    from planner.memory import stage_activation_bytes
    toy = make_model(name="toy", num_layers=6, hidden_size=512, num_attention_heads=8,
                     vocab_size=50304, hidden_dropout=0.0, attention_dropout=0.0)
    cfg = ParallelConfig(tp=1, pp=4, vpp=2, dp=2, mbs=4, global_batch=32, seq_len=1024,
                         vocab_strategy=VocabStrategy.REDISTRIBUTE)
    chunks = ((2,), ())  # rank 3: layer 2, then the loss chunk
    layer = layer_activation_bytes(toy, cfg, 2, Recompute.NONE)
    head = 2 * 1024 * 4 * 512 * 2  # final-norm input and LM-head input, one micro-batch
    stored, _ = stage_activation_bytes(toy, cfg, 3, chunks)
    assert stored == 4 * layer + head
    probe, _ = stage_activation_bytes(toy, cfg, 3, ((2,),))  # one block: even chunks
    assert probe == math.ceil(2.5 * layer + head)


def test_precision_policies() -> None:
    """fp32: 4 + 4 + 8 = 16 bytes/param, no separate master copy; fp8 (Transformer Engine)
    adds an fp8 weight and its transpose (2 bytes) to bf16's 18; torchtitan FSDP2 keeps fp32
    sharded parameters as the master copy: 16."""
    params = StageParams(dense=100, expert=0, largest_layer=0)
    cfg = ParallelConfig(global_batch=1)
    for precision, framework, expected in ((Precision.FP32, Framework.MEGATRON, 1600),
                                           (Precision.FP8, Framework.MEGATRON, 2000),
                                           (Precision.BF16, Framework.TORCHTITAN, 1600)):
        policy = precision_policy(precision, framework)
        assert sum(model_state_bytes(params, cfg, policy)) == expected


def test_routed_token_buffers_follow_capacity_factor() -> None:
    """Dropless routing assumes the busiest expert rank gets 1.5x the mean; a capacity
    factor caps it instead, so a capacity factor of 1.0 stores less."""
    mixtral = BUILTIN_MODELS["mixtral-8x7b"]
    capped = dataclasses.replace(mixtral, moe=dataclasses.replace(mixtral.moe,
                                                                  capacity_factor=1.0))
    cfg = ParallelConfig(tp=2, dp=4, ep=8, etp=1, global_batch=8, seq_len=4096,
                         sequence_parallel=True)
    assert layer_activation_bytes(capped, cfg, 0, Recompute.NONE) < layer_activation_bytes(
        mixtral, cfg, 0, Recompute.NONE)


def test_torchtitan_fsdp_under_pipelining_keeps_the_stage_unsharded() -> None:
    """torchtitan with FSDP and a pipeline gathers a stage's parameters once and keeps them
    (16-bit) with fp32 gradients accumulated unsharded until the last micro-batch: beside the
    sharded fp32 parameters, gradients and Adam moments (4 + 4 + 8 bytes / dp), 2 + 4 bytes
    per parameter of the stage; no per-layer gather buffers. Megatron refuses ZeRO-3 with a
    pipeline; torchtitan's ZeRO 2 and 3 are then the same."""
    from planner.memory import model_state_bytes, precision_policy, stage_memory, stage_params
    from planner.parallel import Framework, stage_chunks, stage_layers
    model = BUILTIN_MODELS["llama3-70b"]
    cfg = ParallelConfig(tp=8, pp=4, dp=4, global_batch=64, seq_len=8192,
                         sequence_parallel=True, zero=3, framework=Framework.TORCHTITAN)
    assert cfg.problems(model) == () and cfg.fsdp_keeps_params
    megatron = dataclasses.replace(cfg, framework=Framework.MEGATRON)
    assert any("pipeline" in p for p in megatron.problems(model))
    params = stage_params(model, cfg, 1, stage_layers(model, cfg)[1])
    count = params.dense + params.expert
    weights, grads, optimizer = model_state_bytes(
        params, cfg, precision_policy(cfg.precision, cfg.framework))
    assert weights == pytest.approx(count * (4 / 4 + 2), abs=2)
    assert grads == pytest.approx(count * (4 / 4 + 4), abs=2)
    assert optimizer == pytest.approx(count * 8 / 4, abs=2)
    zero2 = dataclasses.replace(cfg, zero=2)
    chunks = stage_chunks(model, cfg)[1]
    assert stage_memory(model, zero2, 1, chunks) == stage_memory(model, cfg, 1, chunks)


def test_torchtitan_zero2_shards_everything_and_keeps_a_bf16_copy() -> None:
    """torchtitan's FSDP at ZeRO 2 (fsdp_reshard_after_forward never) shards parameters,
    gradients and moments like ZeRO 3 and keeps the unsharded bf16 parameters from forward to
    backward: 4/N + 2, 4/N and 8/N bytes per parameter (not the full fp32 weights of ZeRO 2
    in the Rajbhandari sense)."""
    from planner.parallel import Framework
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(dp=8, global_batch=16, seq_len=8192, zero=2,
                         framework=Framework.TORCHTITAN)
    params = stage_params(model, cfg, 0, stage_layers(model, cfg)[0])
    count = params.dense + params.expert
    weights, grads, optimizer = model_state_bytes(
        params, cfg, precision_policy(cfg.precision, cfg.framework))
    assert weights == pytest.approx(count * (4 / 8 + 2), abs=2)
    assert grads == pytest.approx(count * 4 / 8, abs=2)
    assert optimizer == pytest.approx(count * 8 / 8, abs=2)


def test_deferred_embedding_wgrad_keeps_head_inputs_and_logit_gradients() -> None:
    """Megatron's --defer-embedding-wgrad-compute keeps, on the last stage, each deferred
    micro-batch's LM-head input (s x b x h, / tp with sequence parallelism) and its logits'
    gradient (s x b x V/tp) until the flush: all m micro-batches, or --wgrad-deferral-limit of
    them. It needs a pipeline."""
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=2, pp=2, dp=2, global_batch=16, seq_len=4096,
                         sequence_parallel=True, zero=1)
    m = cfg.num_microbatches
    base = estimate_memory(model, cfg, 80 * GiB).stages[-1].activations_bytes
    per_mb = 2 * 4096 * model.hidden_size / 2 + 2 * 4096 * model.padded_vocab_size(2) / 2
    for limit, deferred in ((0, m), (3, 3)):
        deferring = dataclasses.replace(cfg, embedding_wgrad_deferral=limit)
        assert deferring.problems(model) == ()
        stored = estimate_memory(model, deferring, 80 * GiB).stages[-1].activations_bytes
        assert stored - base == pytest.approx(deferred * per_mb, abs=2)
    flat = dataclasses.replace(cfg, pp=1, dp=4, embedding_wgrad_deferral=0)
    assert any("embedding_wgrad_deferral" in p for p in flat.problems(model))


def test_distributed_optimizer_instances_shard_over_a_part_of_dp() -> None:
    """Megatron's --num-distributed-optimizer-instances N replicates the distributed optimizer N
    times: master weights and moments (12 bytes/param in bf16) shard over dp*cp / N ranks."""
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(tp=2, dp=8, global_batch=16, seq_len=4096, sequence_parallel=True,
                         zero=1)
    params = stage_params(model, cfg, 0, stage_layers(model, cfg)[0])
    policy = precision_policy(cfg.precision, cfg.framework)
    one = model_state_bytes(params, cfg, policy)[2]
    four = model_state_bytes(params, dataclasses.replace(cfg, dist_opt_instances=4), policy)[2]
    assert four == pytest.approx(one * 4, rel=1e-6)
    assert dataclasses.replace(cfg, dist_opt_instances=3).problems(model)
    assert dataclasses.replace(cfg, zero=0, dist_opt_instances=2).problems(model)


def test_remedies_offer_what_the_framework_can_run() -> None:
    """An unsharded data-parallel plan is told to shard its optimizer: Megatron's distributed
    optimizer (zero 1); torchtitan has none, its remedy is FSDP (zero 3), pipelined or not."""
    from planner.advice import remedies
    from planner.parallel import Framework
    model = BUILTIN_MODELS["llama3-70b"]
    for framework, stage in ((Framework.MEGATRON, "--zero 1"), (Framework.TORCHTITAN, "--zero 3")):
        cfg = ParallelConfig(tp=8, pp=4, dp=4, global_batch=64, seq_len=8192,
                             sequence_parallel=True, framework=framework)
        changes = {r.change for r in remedies(model, cfg, 40 * GiB, 0.0, 8, limit=20)}
        assert stage in changes and ({"--zero 1", "--zero 3"} - {stage}).isdisjoint(changes)


def test_fp8_weight_copies_and_dtype_flags() -> None:
    """fp8 training keeps an fp8 weight and its transpose beside each bf16 GEMM weight, not
    beside the vocabulary layers (Megatron's embedding and output layer are not Transformer
    Engine modules); --fp8-param-gather keeps the GEMM weights in fp8 only (1 + 1 bytes);
    --grad-reduce-in-bf16 halves the gradient buffer (Megatron validate_args)."""
    from planner.memory import config_policy, model_state_bytes, stage_params
    from planner.parallel import stage_layers
    model = BUILTIN_MODELS["llama3-70b"]
    cfg = ParallelConfig(tp=4, pp=8, dp=2, vpp=5, global_batch=128, seq_len=8192,
                         sequence_parallel=True, zero=1, precision=Precision.FP8)
    params = stage_params(model, cfg, 0, stage_layers(model, cfg)[0])
    assert params.vocab == model.padded_vocab_size(4) * model.hidden_size // 4  # embedding
    gemm = params.dense - params.vocab
    weights, grads, _ = model_state_bytes(params, cfg, config_policy(cfg))
    assert weights == gemm * (2 + 2) + params.vocab * 2 and grads == params.dense * 4
    lean = dataclasses.replace(cfg, fp8_param_gather=True, grad_reduce_in_bf16=True)
    assert lean.problems(model) == ()
    weights, grads, _ = model_state_bytes(params, lean, config_policy(lean))
    assert weights == gemm * (1 + 1) + params.vocab * 2 and grads == params.dense * 2
    # Megatron refuses fp8 parameters without the distributed optimizer or FSDP
    assert any("fp8_param_gather" in p
               for p in dataclasses.replace(lean, zero=0).problems(model))
    assert any("fp8_param_gather" in p
               for p in dataclasses.replace(lean, precision=Precision.BF16).problems(model))


def test_dropout_masks_only_where_the_model_has_dropout() -> None:
    """Korthikanti's 1-byte masks (after attention, after the MLP, on the attention
    probabilities without flash attention, where dropout's 16-bit output is kept too) exist
    only with dropout > 0: PyTorch's dropout returns its input for p = 0 and torchtitan's
    models have no dropout layers."""
    from planner.memory import layer_activation_bytes
    llama = BUILTIN_MODELS["llama3-8b"]
    masked = dataclasses.replace(llama, hidden_dropout=0.1, attention_dropout=0.1)
    cfg = ParallelConfig(tp=2, dp=4, global_batch=8, seq_len=4096, sequence_parallel=True)
    sbh = 4096 * 1 * llama.hidden_size
    none = layer_activation_bytes(llama, cfg, 0, Recompute.NONE)
    assert layer_activation_bytes(masked, cfg, 0, Recompute.NONE) - none == 2 * sbh // 2
    plain = dataclasses.replace(cfg, flash_attention=False)  # the probabilities' mask too
    assert (layer_activation_bytes(masked, plain, 0, Recompute.NONE)
            - layer_activation_bytes(llama, plain, 0, Recompute.NONE)
            == 2 * sbh // 2 + 3 * llama.num_attention_heads * 4096 * 4096 // 2)
    titan = dataclasses.replace(cfg, framework=Framework.TORCHTITAN)
    assert layer_activation_bytes(masked, titan, 0, Recompute.NONE) == layer_activation_bytes(
        llama, titan, 0, Recompute.NONE)


def test_megatron_fp8_linears_save_their_quantized_inputs() -> None:
    """Transformer Engine's fp8 linears keep the fp8 tensor they quantized for the weight
    gradient: the QKV, FC1 and FC2 inputs take 1 byte per element instead of 2, and the
    projection's fp8 copy sits beside the 16-bit attention output the attention keeps.
    torchtitan's float8 linears keep the bf16 input."""
    from planner.memory import layer_activation_bytes
    model = BUILTIN_MODELS["llama3-70b"]
    bf16 = ParallelConfig(tp=4, dp=2, global_batch=2, seq_len=8192, sequence_parallel=True)
    fp8 = dataclasses.replace(bf16, precision=Precision.FP8)
    s, t, h, f = 8192, 4, model.hidden_size, model.ffn_hidden_size
    saved = 2 * s * h / t + s * f / t - s * model.attn_out_width / t  # QKV, FC1; FC2; proj
    assert layer_activation_bytes(model, bf16, 0, Recompute.NONE) - layer_activation_bytes(
        model, fp8, 0, Recompute.NONE) == pytest.approx(saved, abs=2)
    titan = dataclasses.replace(fp8, framework=Framework.TORCHTITAN, zero=3)
    assert layer_activation_bytes(model, titan, 0, Recompute.NONE) == layer_activation_bytes(
        model, dataclasses.replace(titan, precision=Precision.BF16), 0, Recompute.NONE)


def test_userbuffers_count_outside_the_allocator() -> None:
    """Megatron's --tp-comm-overlap registers ten [seq * mbs / cp, hidden] userbuffers outside
    PyTorch's allocator: in the peak (nvidia-smi), not in allocated or reserved."""
    from planner.memory import USERBUFFERS_LAYERS, estimate_memory
    model = BUILTIN_MODELS["llama3-70b"]
    plain = ParallelConfig(tp=8, pp=4, dp=4, global_batch=64, seq_len=8192,
                           sequence_parallel=True, zero=1)
    overlap = dataclasses.replace(plain, tp_comm_overlap=True)
    a = estimate_memory(model, plain, 80 * GiB).stages[0]
    b = estimate_memory(model, overlap, 80 * GiB).stages[0]
    ub = USERBUFFERS_LAYERS * 8192 * model.hidden_size * 2
    assert (b.allocated_bytes, b.reserved_bytes) == (a.allocated_bytes, a.reserved_bytes)
    assert b.userbuffers_bytes == ub and b.peak_bytes - a.peak_bytes == ub


def test_torchtitan_compiled_loss_keeps_only_bf16_logits_and_their_gradient() -> None:
    """torchtitan compiles its cross entropy with the model (PR #1033, April 2025): the fp32
    upcast and softmax fuse away, 4 bytes per logit at the loss's peak instead of eager
    PyTorch's 12; earlier releases (compiled_loss false) and eager runs keep 12 (16 under TP,
    whose vocabulary-parallel loss runs the softmax op by op); Megatron's own cross entropy is
    unchanged. The loss passes move 4 bytes per logit each way. The
    held-out Trainy H200 runs of 2025 (compiled loss) measured 48 GiB where the 12-byte loss
    had priced 70."""
    from planner.cost.compute import loss_pass_bytes
    from planner.memory import loss_bytes_per_element
    titan = ParallelConfig(dp=8, global_batch=16, mbs=2, seq_len=8192, zero=3,
                           framework=Framework.TORCHTITAN)
    assert loss_bytes_per_element(titan) == 4 and loss_pass_bytes(titan) == (4, 4)
    for older in (dataclasses.replace(titan, compiled_loss=False),
                  dataclasses.replace(titan, eager=True)):
        assert loss_bytes_per_element(older) == 12 and loss_pass_bytes(older) == (22, 26)
    megatron = dataclasses.replace(titan, framework=Framework.MEGATRON, zero=1)
    assert loss_bytes_per_element(megatron) == 6 and loss_pass_bytes(megatron) == (38, 14)
    # under TP the vocabulary-parallel loss runs its softmax op by op (16 bytes at the peak,
    # 38 each way); compiled, its saved fp32 log-probabilities and fp32 gradient still count
    sharded = dataclasses.replace(titan, tp=8, dp=1, sequence_parallel=True,
                                  compiled_loss=False)
    assert loss_bytes_per_element(sharded) == 16 and loss_pass_bytes(sharded) == (38, 38)
    compiled_tp = dataclasses.replace(sharded, compiled_loss=True)
    assert loss_bytes_per_element(compiled_tp) == 8 and loss_pass_bytes(compiled_tp) == (4, 4)
    model = BUILTIN_MODELS["llama3-8b"]
    compiled = estimate_memory(model, titan, 141 * GiB).worst.transient_bytes
    eager_loss = estimate_memory(model, dataclasses.replace(titan, compiled_loss=False),
                                 141 * GiB).worst.transient_bytes
    assert compiled < eager_loss


def test_eager_op_sac_under_tp_caches_the_partial_sums_it_saves() -> None:
    """Eager op-level SAC caches the outputs of every saved op: under TP with sequence
    parallelism w2's local product (the full-width partial sum, 2sbh) and both blocks'
    reduce-scatter outputs (2sbh/t each) stay until backward, where compiled code keeps only
    what backward needs (the attention block's reduce-scatter output, counted as w2's sharded
    term). Without TP there is no partial sum."""
    from planner.memory import op_sac_layer_bytes
    model = BUILTIN_MODELS["llama3-8b"]
    compiled = ParallelConfig(tp=8, dp=1, mbs=1, global_batch=1, seq_len=8192, zero=3,
                              framework=Framework.TORCHTITAN, sequence_parallel=True,
                              recompute=Recompute.SELECTIVE)
    eager = dataclasses.replace(compiled, eager=True)
    sbh = 8192 * 4096
    extra = 2 * sbh - 2 * sbh / 8 + 2 * (2 * sbh / 8)
    assert op_sac_layer_bytes(model, eager, 0) - op_sac_layer_bytes(model, compiled, 0) == (
        pytest.approx(extra, abs=1))
    single = dataclasses.replace(compiled, tp=1, dp=8, global_batch=8, sequence_parallel=False)
    assert op_sac_layer_bytes(model, dataclasses.replace(single, eager=True), 0) == (
        op_sac_layer_bytes(model, single, 0))


def test_megatron_recompute_modules_drop_what_each_module_recomputes() -> None:
    """Megatron's --recompute-modules, by Megatron-Core's code: layernorm discards the outputs
    of the norms that are modules of their own (MLA's input norm, the MoE layer's pre-MLP
    norm), which the next linears had saved; mla_up_proj Q, K and V; moe_act the experts' FC2
    input; shared_experts the shared experts' tensors; mlp a dense MLP but its input; moe an
    MoE layer but the norm's input and output. core_attn alone is the default; without it the
    unfused attention keeps its scores."""
    from planner.memory import routed_tokens
    model = BUILTIN_MODELS["deepseek-v3"]
    base = ParallelConfig(tp=2, dp=4, ep=8, etp=1, mbs=1, global_batch=4, seq_len=4096,
                          sequence_parallel=True, recompute=Recompute.SELECTIVE)
    s, b, h, t = 4096, 1, model.hidden_size, 2
    sbh = s * b * h
    dense, moe_layer = 0, 3
    assert model.mla is not None and model.moe is not None

    def saved(layer: int, *modules: str) -> int:
        cfg = dataclasses.replace(base, recompute_modules=modules)
        assert cfg.problems(model) == ()
        return layer_activation_bytes(model, cfg, layer, Recompute.SELECTIVE)

    core = saved(moe_layer, "core_attn")
    assert saved(moe_layer, "core_attn", "layernorm") == pytest.approx(
        core - 2 * (2 * sbh / t), abs=2)  # MLA's input norm and the pre-MLP norm, 2 bytes each
    assert saved(moe_layer, "core_attn", "mla_up_proj") == pytest.approx(
        core - 2 * s * b * (model.q_width + 2 * model.kv_width) / t, abs=2)
    fe = model.moe.ffn_hidden_size
    assert saved(moe_layer, "core_attn", "moe_act") == pytest.approx(
        core - 2 * routed_tokens(model, base) * fe, abs=2)
    shared = model.moe.shared_width
    assert saved(moe_layer, "core_attn", "shared_experts") == pytest.approx(
        core - (2 * s * b * shared * 2 / t + 2 * s * b * shared / t), abs=2)
    whole = saved(moe_layer, "core_attn", "moe")
    assert whole < saved(moe_layer, "core_attn", "moe_act", "shared_experts")
    dense_core = saved(dense, "core_attn")
    f = model.ffn_hidden_size
    dense_mlp = saved(dense, "core_attn", "mlp")
    assert dense_mlp == pytest.approx(
        dense_core - (2 * sbh / t + 2 * s * b * f * 2 / t + 2 * s * b * f / t), abs=2)
    unfused = dataclasses.replace(base, flash_attention=False)
    no_core = dataclasses.replace(unfused, recompute_modules=("moe_act",))
    assert (layer_activation_bytes(model, no_core, moe_layer, Recompute.SELECTIVE)
            > layer_activation_bytes(model, unfused, moe_layer, Recompute.SELECTIVE))
    # what Megatron-Core refuses, and names it does not know
    for modules, words in ((("moe_act",), "grouped GEMM"), (("mlp_up",), "unknown"),
                           (("core_attn", "core_attn"), "twice")):
        cfg = dataclasses.replace(base, recompute_modules=modules,
                                  moe_grouped_gemm=modules != ("moe_act",))
        assert any(words in p for p in cfg.problems(model)), modules
    llama = BUILTIN_MODELS["llama3-8b"]
    plain = ParallelConfig(dp=8, global_batch=8, seq_len=4096, recompute=Recompute.SELECTIVE,
                           recompute_modules=("mla_up_proj",))
    assert any("multi-latent" in p for p in plain.problems(llama))
    titan = dataclasses.replace(plain, recompute_modules=("mlp",), framework=Framework.TORCHTITAN,
                                zero=3)
    assert any("Megatron's" in p for p in titan.problems(llama))
    ignored = dataclasses.replace(plain, recompute=Recompute.FULL)  # other modes ignore them
    assert ignored.problems(llama) == ()


def test_the_early_verdict_is_the_estimates_verdict() -> None:
    """memory_fits stops at the first stage over capacity; its answer is estimate_memory's,
    for configurations on both sides of the line (the capacity set between their stages'
    peaks, so that stages other than the first decide too)."""
    from planner.memory import memory_fits
    model = BUILTIN_MODELS["llama3-70b"]
    configs = [ParallelConfig(tp=8, pp=pp, dp=1, vpp=vpp, mbs=mbs, global_batch=64,
                              seq_len=8192, recompute=recompute, zero=1)
               for pp in (2, 4, 8) for vpp in (1, 2) for mbs in (1, 2)
               for recompute in (Recompute.NONE, Recompute.FULL)
               if model.num_layers % (pp * vpp) == 0]
    checked = 0
    for cfg in configs:
        stages = estimate_memory(model, cfg, 80 * GiB).stages
        peaks = sorted({s.peak_bytes for s in stages})
        for capacity in (peaks[0] - 1, *peaks, peaks[-1] + 1):
            assert memory_fits(model, cfg, capacity) is estimate_memory(model, cfg,
                                                                         capacity).fits
            checked += 1
    assert checked > 2 * len(configs)


def test_torchtitan_keeps_the_widened_keys_and_values() -> None:
    """torchtitan before 0.3.0 repeated each K/V head to its query heads before attention
    (legacy_attention), and the kernel saves what it is given: such a GQA layer without recompute
    keeps what its MHA twin keeps. torchtitan 0.3.0 (enable_gqa) and Megatron (Transformer
    Engine takes the groups) keep 2 x 2sb(q - kv)/t less than the twin."""
    gqa = BUILTIN_MODELS["llama3-8b"]
    mha = dataclasses.replace(gqa, num_query_groups=gqa.num_attention_heads)
    cfg = ParallelConfig(tp=2, dp=4, global_batch=8, seq_len=4096, mbs=1,
                         sequence_parallel=True)
    titan = dataclasses.replace(cfg, framework=Framework.TORCHTITAN)
    older = dataclasses.replace(titan, legacy_attention=True)
    assert (layer_activation_bytes(gqa, older, 0, Recompute.NONE)
            == layer_activation_bytes(mha, older, 0, Recompute.NONE))
    narrower = 2 * 2 * 4096 * (gqa.q_width - gqa.kv_width) / 2
    for run in (cfg, titan):
        assert (layer_activation_bytes(mha, run, 0, Recompute.NONE)
                - layer_activation_bytes(gqa, run, 0, Recompute.NONE)) == pytest.approx(
                    narrower), run.framework


def test_ring_attention_buffers_by_hand_and_at_a_million_tokens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One token per rank of a 2-head, 4-wide-head MHA model at cp 4 (Q = 8 elements, KV =
    16): PyTorch's ring holds 16 x (2 x 4 + 16) + 6 x 8 = 432 bytes during a layer's
    backward (every rank's K and V gathered, fp32 accumulators and gradient buffers),
    Transformer Engine's 16 x 10 + 2 x 8 = 176. At a million tokens over cp 32 the gathered,
    widened K and V of Llama 3 8B under torchtitan before 0.3.0 (2 s q_width x 2 bytes =
    16 GiB) and the fp32 gradient
    buffers take the transient peak from the loss phase."""
    from planner.memory import ring_attention_buffer_bytes
    tiny = make_model(name="tiny", num_layers=2, hidden_size=8, num_attention_heads=2,
                      vocab_size=64, max_position_embeddings=64)
    cfg = ParallelConfig(cp=4, dp=1, global_batch=1, seq_len=4, mbs=1)
    titan = dataclasses.replace(cfg, framework=Framework.TORCHTITAN, zero=3, legacy_attention=True)
    assert ring_attention_buffer_bytes(tiny, titan) == 432
    assert ring_attention_buffer_bytes(tiny, cfg) == 176
    assert ring_attention_buffer_bytes(tiny, dataclasses.replace(cfg, cp=1)) == 0
    model = BUILTIN_MODELS["llama3-8b"]
    long = ParallelConfig(cp=32, dp=1, global_batch=1, seq_len=1 << 20, mbs=1, zero=3,
                          recompute=Recompute.FULL, framework=Framework.TORCHTITAN,
                          legacy_attention=True)
    ring = ring_attention_buffer_bytes(model, long)
    assert ring > 2 * (1 << 20) * model.q_width * 2  # the gathered, widened K and V
    with_ring = estimate_memory(model, long, 80 * GiB).stages[0].transient_bytes
    monkeypatch.setattr("planner.memory.ring_attention_buffer_bytes", lambda m, c: 0)
    without = estimate_memory(model, long, 80 * GiB).stages[0].transient_bytes
    # without them the loss phase (logits, the gathered LM head) is the peak; with them a
    # layer's backward is, the ring's buffers on top of what it held before
    assert with_ring - ring < without < with_ring


def test_flexattention_cp_keeps_every_ranks_keys_and_values() -> None:
    """torchtitan 0.3.0's FlexAttention CP gathers every rank's K and V and the attention saves
    them: a layer at cp 4 over 4L tokens keeps what a layer at cp 1 over L keeps, plus the
    other three ranks' K and V (2 x 3 x L x 2 kv / t bytes); Transformer Engine's ring and
    torchtitan's before 0.3.0 keep their local ones. In backward the gathered K/V gradients
    (and under op SAC the re-gathered K and V) are transient."""
    from planner.memory import ring_attention_buffer_bytes
    model = BUILTIN_MODELS["llama3-8b"]
    local = ParallelConfig(tp=2, dp=4, global_batch=8, seq_len=8192, mbs=1,
                           sequence_parallel=True, zero=3, framework=Framework.TORCHTITAN)
    flex = dataclasses.replace(local, cp=4, dp=1, seq_len=4 * 8192)
    kept = layer_activation_bytes(model, flex, 0, Recompute.NONE)
    assert kept - layer_activation_bytes(model, local, 0, Recompute.NONE) == pytest.approx(
        2 * 3 * 8192 * 2 * model.kv_width / 2, abs=1)
    for ring in (dataclasses.replace(flex, legacy_attention=True),
                 dataclasses.replace(flex, framework=Framework.MEGATRON)):
        twin = dataclasses.replace(local, framework=ring.framework,
                                   legacy_attention=ring.legacy_attention)
        assert (layer_activation_bytes(model, ring, 0, Recompute.NONE)
                == layer_activation_bytes(model, twin, 0, Recompute.NONE)), ring.framework
    kv = 8192 * 2 * model.kv_width / 2
    assert ring_attention_buffer_bytes(model, flex) == pytest.approx(kv * 2 * 4, abs=1)
    sac = dataclasses.replace(flex, recompute=Recompute.SELECTIVE)
    assert ring_attention_buffer_bytes(model, sac) == pytest.approx(kv * 4 * 4, abs=1)


def test_torch_pipelining_keeps_a_receive_buffer_per_micro_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """torchtitan pipelines with torch.distributed.pipelining, whose stages allocate an input
    and an output-gradient buffer for every micro-batch of the step. Llama 3 8B, pp 4, 8
    micro-batches of 1 x 8192, no TP: a boundary activation is 8192 x 4096 x 2 bytes. Stage 0
    (no input buffers) holds 8 gradient buffers and its 4 in-flight outputs; stage 1, with 3
    micro-batches in flight, 5 inputs not yet counted, 8 gradient buffers and 3 outputs; the
    last stage 8 - 1 inputs and nothing it sends. They add to the stage's stored activations;
    Megatron's pipeline receives into per-send tensors and frees sent outputs: nothing."""
    import planner.memory as memory_module
    from planner.memory import pipeline_buffer_bytes, stage_activation_bytes
    from planner.parallel import live_chunk_passes, stage_chunks
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(pp=4, dp=1, mbs=1, global_batch=8, seq_len=8192, zero=3,
                         framework=Framework.TORCHTITAN)
    boundary = 8192 * 4096 * 2
    live = [live_chunk_passes(cfg, stage)[0] for stage in range(4)]
    assert [moment[0] for moment in live] == [4, 3, 2, 1]
    assert pipeline_buffer_bytes(model, cfg, 0, live[0]) == (8 + 4) * boundary
    assert pipeline_buffer_bytes(model, cfg, 1, live[1]) == (5 + 8 + 3) * boundary
    assert pipeline_buffer_bytes(model, cfg, 3, live[3]) == 7 * boundary
    chunks = stage_chunks(model, cfg)[1]
    megatron = dataclasses.replace(cfg, framework=Framework.MEGATRON, zero=1)
    with_buffers = stage_activation_bytes(model, cfg, 1, chunks)[0]
    megatron_stored = stage_activation_bytes(model, megatron, 1, chunks)[0]
    monkeypatch.setattr(memory_module, "pipeline_buffer_bytes", lambda *_: 0.0)
    assert with_buffers - stage_activation_bytes(model, cfg, 1, chunks)[0] == pytest.approx(
        (5 + 8 + 3) * boundary, abs=1)
    assert stage_activation_bytes(model, megatron, 1, chunks)[0] == megatron_stored


def test_deepspeed_zero3_keeps_reused_parameters_gathered() -> None:
    """DeepSpeed ZeRO-3 keeps fetched parameters its trace reuses within 1e9 parameters
    (stage3_max_reuse_distance) and prefetches up to 1e9 live (stage3_max_live_parameters):
    around the forward/backward turn up to 1e9 of Llama 3 8B's layer parameters stay
    gathered in 16-bit (about 4.6 of its 218M-parameter layers), in the loss phase and in the
    backward, where FSDP holds two layers. A model smaller than that keeps all of it."""
    from planner.memory import (
        DEEPSPEED_MAX_LIVE_PARAMETERS,
        deepspeed_live_parameters,
        stage_activation_bytes,
        stage_params,
    )
    from planner.parallel import stage_chunks
    model = BUILTIN_MODELS["llama3-8b"]
    cfg = ParallelConfig(dp=8, mbs=1, global_batch=8, seq_len=4096, zero=3,
                         framework=Framework.DEEPSPEED)
    layers = tuple(range(model.num_layers))
    params = stage_params(model, cfg, 0, layers)
    assert deepspeed_live_parameters(cfg, params) == DEEPSPEED_MAX_LIVE_PARAMETERS
    assert 4 < DEEPSPEED_MAX_LIVE_PARAMETERS / params.largest_layer < 5
    titan = dataclasses.replace(cfg, framework=Framework.TORCHTITAN)
    assert deepspeed_live_parameters(titan, params) == 0.0
    assert deepspeed_live_parameters(dataclasses.replace(cfg, zero=2), params) == 0.0
    chunks = stage_chunks(model, cfg)[0]
    deepspeed = stage_activation_bytes(model, cfg, 0, chunks)[1]
    fsdp = stage_activation_bytes(model, dataclasses.replace(cfg, framework=Framework.MEGATRON),
                                  0, chunks)[1]
    assert deepspeed - fsdp >= 2 * (DEEPSPEED_MAX_LIVE_PARAMETERS - 2 * params.largest_layer) - 1
    # a model below the limit keeps all of its layers gathered
    tiny = make_model(name="tiny", num_layers=4, hidden_size=1024, num_attention_heads=8,
                      vocab_size=32000, max_position_embeddings=2048)
    tiny_params = stage_params(tiny, cfg, 0, tuple(range(4)))
    assert deepspeed_live_parameters(cfg, tiny_params) == (
        tiny_params.dense + tiny_params.expert - tiny_params.vocab)
