"""An existing Megatron-LM launch (arguments file or launch script) as a model and a
configuration, for `planner estimate/check --from megatron`.

Flag names and meanings: megatron-core 0.19 `megatron/training/arguments.py` (the same table
`planner emit` writes from; the emit tests round-trip through it). Flags that decide memory or
time are mapped; flags that do not (data, optimizer hyperparameters, logging, checkpoints) are
accepted as `ignored`; anything else is reported as `unknown`, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from planner.emit.megatron import ATTENTION_BACKEND, MEGATRON_SWITCHES
from planner.errors import InputError
from planner.importers.imported import ImportedLaunch, launcher_world
from planner.importers.shell import script_words
from planner.model import MlaSpec, ModelSpec, MoeSpec, make_model
from planner.parallel import (
    DEFAULT_RECOMPUTE_MODULES,
    RECOMPUTE_MODULES,
    AttentionKernel,
    ParallelConfig,
    Precision,
    Recompute,
    VocabStrategy,
)

_KERNEL_OF_BACKEND = {backend: kernel for kernel, backend in ATTENTION_BACKEND.items()}

# flag -> takes a value. Flags mapped onto the model or the configuration.
MAPPED: dict[str, bool] = {
    "--num-layers": True, "--hidden-size": True, "--ffn-hidden-size": True,
    "--num-attention-heads": True, "--group-query-attention": False,
    "--num-query-groups": True, "--kv-channels": True, "--seq-length": True,
    "--max-position-embeddings": True, "--position-embedding-type": True,
    "--use-rotary-position-embeddings": False, "--no-position-embedding": False,
    "--normalization": True, "--swiglu": False, "--squared-relu": False,
    "--disable-bias-linear": False, "--add-qkv-bias": False, "--qk-layernorm": False,
    "--untie-embeddings-and-output-weights": False, "--vocab-size": True,
    "--padded-vocab-size": True, "--num-experts": True, "--moe-router-topk": True,
    "--moe-ffn-hidden-size": True, "--moe-shared-expert-intermediate-size": True,
    "--moe-layer-freq": True, "--moe-expert-capacity-factor": True,
    "--multi-latent-attention": False, "--q-lora-rank": True, "--kv-lora-rank": True,
    "--qk-head-dim": True, "--qk-pos-emb-head-dim": True, "--v-head-dim": True,
    "--mtp-num-layers": True,
    "--tensor-model-parallel-size": True, "--pipeline-model-parallel-size": True,
    "--context-parallel-size": True, "--expert-model-parallel-size": True,
    "--expert-tensor-parallel-size": True, "--sequence-parallel": False,
    "--num-layers-per-virtual-pipeline-stage": True,
    "--num-virtual-stages-per-pipeline-rank": True,
    "--decoder-first-pipeline-num-layers": True, "--decoder-last-pipeline-num-layers": True,
    "--pipeline-model-parallel-layout": True,
    "--account-for-embedding-in-pipeline-split": False,
    "--account-for-loss-in-pipeline-split": False,
    "--microbatch-group-size-per-virtual-pipeline-stage": True,
    "--use-tp-pp-dp-mapping": False, "--micro-batch-size": True, "--global-batch-size": True,
    "--bf16": False, "--fp16": False, "--fp8-format": True, "--recompute-activations": False,
    "--recompute-granularity": True, "--recompute-method": True,
    "--recompute-num-layers": True, "--use-distributed-optimizer": False,
    "--use-megatron-fsdp": False, "--use-torch-fsdp2": False,
    "--data-parallel-sharding-strategy": True, "--overlap-grad-reduce": False,
    "--overlap-param-gather": False, "--attention-backend": True, "--use-flash-attn": False,
    "--moe-grouped-gemm": False, "--moe-token-dispatcher-type": True,
    "--defer-embedding-wgrad-compute": False, "--wgrad-deferral-limit": True,
    "--num-distributed-optimizer-instances": True,
    "--fp8-param-gather": False, "--grad-reduce-in-bf16": False, "--fp8-recipe": True,
    "--hidden-dropout": True, "--attention-dropout": True,
    "--first-last-layers-bf16": False, "--num-layers-at-start-in-bf16": True,
    "--num-layers-at-end-in-bf16": True, "--accumulate-allreduce-grads-in-fp32": False,
    "--recompute-modules": True,
    **{switch: False for _, switch, _ in MEGATRON_SWITCHES},
}

# Flags with no effect on memory or step time: data, tokenizer, optimizer hyperparameters,
# schedule length, logging, checkpoint paths, initialisation, numerics of the loss scale,
# router loss coefficients. Anything else the planner does not map (kernel fusions, fp8
# parameter storage other than --fp8-param-gather, ...) is reported as not modelled.
IGNORED_PREFIXES = (
    "--lr", "--min-lr", "--weight-decay", "--adam-", "--clip-grad", "--init-method",
    "--data-path", "--data-cache-path", "--split", "--vocab-file", "--merge-file",
    "--tokenizer-", "--save", "--load", "--log-", "--eval-", "--tensorboard-", "--wandb-",
    "--train-iters", "--train-samples", "--seed", "--exit-", "--mock-data",
    "--distributed-backend", "--distributed-timeout", "--rotary-", "--norm-epsilon",
    "--use-mcore-models", "--transformer-impl", "--ckpt-", "--no-load-", "--no-save-",
    "--finetune", "--dataloader-type", "--num-workers", "--moe-aux-loss-coeff",
    "--moe-z-loss-coeff", "--moe-router-score-function", "--moe-router-enable-expert-bias",
    "--moe-router-bias-update-rate", "--moe-router-topk-scaling-factor",
    "--moe-router-pre-softmax", "--make-vocab-size-divisible-by", "--timing-log",
    "--loss-scale", "--initial-loss-scale", "--hysteresis", "--async-save", "--dist-ckpt",
    "--no-initialization", "--num-dataset-builder-threads", "--no-mmap", "--reset-",
    "--eod-mask-loss", "--fim-", "--decoupled-lr", "--decoupled-min-lr",
    "--override-opt_param-scheduler", "--mtp-loss-scaling-factor",
    "--calculate-per-token-loss", "--disable-gloo-process-groups",
)


# Flags argparse reads with nargs="*": every following word up to the next flag.
MULTI_VALUED = frozenset({"--recompute-modules"})

# Megatron's --recompute-modules default (megatron/core/transformer/transformer_config.py).


def megatron_words(text: str, read: Callable[[str], str | None] = lambda name: None
                   ) -> tuple[list[str], int | None]:
    """The Megatron flags of an arguments file or launch script, and the world size the
    script's torchrun line names (--nnodes x --nproc-per-node), if any. `read` resolves
    `$(cat FILE)` (shell.script_words)."""
    commands, _ = script_words(text, read)
    for words in commands:
        script = next((i for i, w in enumerate(words) if re.search(r"pretrain\w*\.py$", w)),
                      None)
        if script is not None:
            return words[script + 1:], launcher_world(words[:script])
    flags = [w for words in commands for w in words]
    return flags, None


def parse_flags(words: list[str], source: str) -> tuple[dict[str, str], list[str], list[str]]:
    """(mapped flag -> value ("" for switches), unknown words, ignored flags). The last
    occurrence of a flag wins, as with argparse."""
    mapped: dict[str, str] = {}
    unknown: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        flag, eq, inline = word.partition("=")
        if not flag.startswith("--"):
            unknown.append(word)
            i += 1
            continue
        if flag in MULTI_VALUED and not eq:
            values: list[str] = []
            while i + 1 < len(words) and not words[i + 1].startswith("--"):
                values.append(words[i + 1])
                i += 1
            mapped[flag] = " ".join(values)
            i += 1
            continue
        if flag in MAPPED:
            if MAPPED[flag]:
                if eq:
                    mapped[flag] = inline
                elif i + 1 < len(words):
                    mapped[flag] = words[i + 1]
                    i += 1
                else:
                    raise InputError(f"{source}: {flag} expects a value")
            else:
                mapped[flag] = ""
            i += 1
            continue
        takes_value = not eq and i + 1 < len(words) and not words[i + 1].startswith("--")
        (ignored if flag.startswith(IGNORED_PREFIXES) else unknown).append(flag)
        i += 2 if takes_value else 1
    return mapped, unknown, ignored


def recompute_modules(flags: dict[str, str]) -> tuple[str, ...]:
    """The modules Megatron's selective recompute checkpoints (--recompute-modules, a list
    that launch files also write as "[a b]"), Megatron's default without the flag."""
    if "--recompute-modules" not in flags:
        return DEFAULT_RECOMPUTE_MODULES
    return tuple(w for w in re.split(r"[\s,\[\]'\"]+", flags["--recompute-modules"]) if w)


def _int(flags: dict[str, str], flag: str, source: str, default: int | None = None) -> int:
    if flag not in flags:
        if default is None:
            raise InputError(f"{source}: {flag} missing; the planner needs it")
        return default
    try:
        return int(flags[flag])
    except ValueError:
        raise InputError(f"{source}: {flag} {flags[flag]!r}: expected an integer") from None


# Megatron-LM's --hidden-dropout and --attention-dropout defaults (arguments.py)
MEGATRON_DROPOUT = 0.1


def _dropout(flags: dict[str, str], flag: str, source: str) -> float:
    """A dropout probability of the launch; Megatron's default when the flag is absent."""
    if flag not in flags:
        return MEGATRON_DROPOUT
    try:
        value = float(flags[flag])
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise InputError(f"{source}: {flag} {flags[flag]!r}: expected a probability in [0, 1)")
    return value


def model_from_flags(flags: dict[str, str], source: str, name: str) -> ModelSpec | None:
    """The model the flags describe; None when the vocabulary size is missing (Megatron takes
    it from the tokenizer)."""
    vocab = flags.get("--padded-vocab-size") or flags.get("--vocab-size")
    if vocab is None:
        return None
    layers = _int(flags, "--num-layers", source)
    hidden = _int(flags, "--hidden-size", source)
    heads = _int(flags, "--num-attention-heads", source)
    groups = (_int(flags, "--num-query-groups", source, 1)
              if "--group-query-attention" in flags else heads)
    moe = None
    if "--num-experts" in flags:
        first_dense, layer_freq = _moe_pattern(flags.get("--moe-layer-freq", "1"), layers,
                                               source)
        moe = MoeSpec(
            num_experts=_int(flags, "--num-experts", source),
            top_k=_int(flags, "--moe-router-topk", source, 2),
            ffn_hidden_size=_int(flags, "--moe-ffn-hidden-size", source,
                                 _int(flags, "--ffn-hidden-size", source, 4 * hidden)),
            shared_ffn_hidden_size=(_int(flags, "--moe-shared-expert-intermediate-size", source)
                                    if "--moe-shared-expert-intermediate-size" in flags
                                    else None),
            num_shared_experts=1 if "--moe-shared-expert-intermediate-size" in flags else 0,
            first_dense_layers=first_dense, layer_freq=layer_freq,
            capacity_factor=(float(flags["--moe-expert-capacity-factor"])
                             if "--moe-expert-capacity-factor" in flags else None))
    mla = None
    if "--multi-latent-attention" in flags:
        mla = MlaSpec(
            q_lora_rank=(_int(flags, "--q-lora-rank", source) if "--q-lora-rank" in flags
                         else None),
            kv_lora_rank=_int(flags, "--kv-lora-rank", source, 32),
            qk_nope_head_dim=_int(flags, "--qk-head-dim", source, 128),
            qk_rope_head_dim=_int(flags, "--qk-pos-emb-head-dim", source, 64),
            v_head_dim=_int(flags, "--v-head-dim", source, 128))
    position = flags.get("--position-embedding-type", "learned_absolute")
    if "--use-rotary-position-embeddings" in flags:
        position = "rope"
    if "--no-position-embedding" in flags:
        position = "none"
    positions = {"learned_absolute": "learned", "rope": "rope", "none": "none",
                 "yarn": "rope", "mrope": "rope"}
    if position not in positions:
        raise InputError(f"{source}: --position-embedding-type {position}: not modelled",
                         hint="use rope, learned_absolute or none")
    activation = ("swiglu" if "--swiglu" in flags else
                  "squared_relu" if "--squared-relu" in flags else "gelu")
    try:
        return make_model(
            name=name, num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
            num_query_groups=groups, vocab_size=int(vocab),
            ffn_hidden_size=_int(flags, "--ffn-hidden-size", source, 4 * hidden),
            activation=activation,
            norm="rmsnorm" if flags.get("--normalization") == "RMSNorm" else "layernorm",
            position_embedding=positions[position],
            max_position_embeddings=_int(flags, "--max-position-embeddings", source,
                                         _int(flags, "--seq-length", source, 4096)),
            tie_embeddings="--untie-embeddings-and-output-weights" not in flags,
            add_bias_linear="--disable-bias-linear" not in flags,
            head_dim=(_int(flags, "--kv-channels", source) if "--kv-channels" in flags
                      else None),
            qk_layernorm="--qk-layernorm" in flags, qkv_bias="--add-qkv-bias" in flags,
            mla=mla, moe=moe, num_mtp_layers=_int(flags, "--mtp-num-layers", source, 0),
            source=source)
    except ValueError as exc:
        raise InputError(f"{source}: the model the flags describe is invalid: {exc}") from None


def _moe_pattern(value: str, num_layers: int, source: str) -> tuple[int, int]:
    """(first dense layers k, frequency f) such that layer i is MoE iff i >= k and i % f == 0,
    from --moe-layer-freq (an integer f, or a per-layer 0/1 list such as [0,0,1,1])."""
    if value.isdigit():
        return 0, int(value)
    pattern = [int(x) for x in re.findall(r"[01]", value)]
    if value.startswith("[") and "*" in value:  # [0]*3+[1]*58
        pattern = []
        for bit, count in re.findall(r"\[([01])\]\*(\d+)", value):
            pattern += [int(bit)] * int(count)
    if len(pattern) != num_layers:
        raise InputError(f"{source}: --moe-layer-freq {value}: expected an integer or "
                         f"{num_layers} entries of 0/1")
    for freq in range(1, num_layers + 1):
        for first in range(num_layers + 1):
            if all(bool(pattern[i]) == (i >= first and i % freq == 0)
                   for i in range(num_layers)):
                return first, freq
    raise InputError(f"{source}: --moe-layer-freq {value}: not a pattern the planner models "
                     "(the first k layers dense, then every f-th layer MoE)")


def config_from_flags(flags: dict[str, str], num_layers: int, dp: int, source: str
                      ) -> tuple[ParallelConfig, list[str]]:
    """The configuration the flags describe on `dp` data-parallel replicas, and notes."""
    notes: list[str] = []
    tp = _int(flags, "--tensor-model-parallel-size", source, 1)
    pp = _int(flags, "--pipeline-model-parallel-size", source, 1)
    vpp = 1
    if "--num-layers-per-virtual-pipeline-stage" in flags:
        per = _int(flags, "--num-layers-per-virtual-pipeline-stage", source)
        vpp = max(1, num_layers // (pp * per)) if per else 1
    if "--num-virtual-stages-per-pipeline-rank" in flags:
        vpp = _int(flags, "--num-virtual-stages-per-pipeline-rank", source)
    layout: tuple[int, ...] = ()
    strategy = VocabStrategy.BASELINE
    chunk_layout: tuple[int, ...] = ()
    if "--pipeline-model-parallel-layout" in flags:
        chunk_layout = _layout(flags["--pipeline-model-parallel-layout"], pp, source)
        vpp = len(chunk_layout) // pp
        if vpp == 1:
            layout, chunk_layout = chunk_layout, ()
    elif "--decoder-first-pipeline-num-layers" in flags or (
            "--decoder-last-pipeline-num-layers" in flags):
        first = _int(flags, "--decoder-first-pipeline-num-layers", source, -1)
        last = _int(flags, "--decoder-last-pipeline-num-layers", source, -1)
        middle_stages = pp - (first >= 0) - (last >= 0)
        rest = num_layers - max(first, 0) - max(last, 0)
        if middle_stages <= 0 or rest % middle_stages:
            raise InputError(f"{source}: the first/last stage layer counts leave {rest} layers "
                             f"for {max(middle_stages, 0)} middle stages")
        each = rest // middle_stages
        layout = tuple([first if first >= 0 else each] + [each] * (pp - 2)
                       + [last if last >= 0 else each])
    elif ("--account-for-embedding-in-pipeline-split" in flags
          and "--account-for-loss-in-pipeline-split" in flags):
        strategy = VocabStrategy.REDISTRIBUTE
    elif ("--account-for-embedding-in-pipeline-split" in flags
          or "--account-for-loss-in-pipeline-split" in flags):
        notes.append("only one of --account-for-embedding/loss-in-pipeline-split: modelled as "
                     "an even split")
    recompute, recompute_layers = Recompute.NONE, None
    granularity = flags.get("--recompute-granularity")
    modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES
    if "--recompute-activations" in flags or granularity == "selective":
        recompute, modules = Recompute.SELECTIVE, recompute_modules(flags)
        unknown = [m for m in modules if m not in RECOMPUTE_MODULES]
        if unknown:
            notes.append(f"--recompute-modules {' '.join(unknown)}: not modelled, priced as "
                         "kept (conservative)")
            modules = tuple(m for m in modules if m in RECOMPUTE_MODULES)
        if not modules:  # nothing the planner knows is recomputed: price it as none
            recompute, modules = Recompute.NONE, DEFAULT_RECOMPUTE_MODULES
    elif granularity == "full":
        recompute = Recompute.FULL
        if flags.get("--recompute-method") == "block":
            recompute_layers = _int(flags, "--recompute-num-layers", source, 1)
        elif _int(flags, "--recompute-num-layers", source, 1) > 1:
            notes.append("uniform recompute of several layers per checkpoint: modelled as "
                         "one checkpoint per layer (keeps more inputs: conservative)")
    # Megatron's default dispatcher is allgather (arguments.py --moe-token-dispatcher-type)
    dispatcher = flags.get("--moe-token-dispatcher-type", "allgather")
    if "--num-experts" in flags and dispatcher != "alltoall":
        default = "" if "--moe-token-dispatcher-type" in flags else " (Megatron's default)"
        notes.append(f"--moe-token-dispatcher-type {dispatcher}{default}: modelled as alltoall")
    zero = 0
    if "--use-distributed-optimizer" in flags:
        zero = 1
    if "--use-megatron-fsdp" in flags or "--use-torch-fsdp2" in flags:
        strategy_name = flags.get("--data-parallel-sharding-strategy", "optim_grads_params")
        zero = {"no_shard": 0, "optim": 1, "optim_grads": 2,
                "optim_grads_params": 3}.get(strategy_name, 3)
    precision = Precision.FP8 if "--fp8-format" in flags else (
        Precision.BF16 if "--bf16" in flags or "--fp16" in flags else Precision.FP32)
    if "--fp16" in flags:
        notes.append("--fp16: modelled as bf16 (same bytes per value)")
    recipe = flags.get("--fp8-recipe", "delayed")
    if precision is Precision.FP8 and recipe not in ("delayed", "tensorwise"):
        notes.append(f"--fp8-recipe {recipe}: priced as tensor-wise fp8 (the only fp8 recipe "
                     "the cost model prices)")
    if "--first-last-layers-bf16" in flags and precision is not Precision.FP8:
        notes.append("--first-last-layers-bf16 without --fp8-format: every layer is bf16")
    fp8_gather = "--fp8-param-gather" in flags and precision is Precision.FP8
    if "--fp8-param-gather" in flags and not fp8_gather:
        notes.append("--fp8-param-gather without --fp8-format: no fp8 weights to keep")
    group = (_int(flags, "--microbatch-group-size-per-virtual-pipeline-stage", source)
             if "--microbatch-group-size-per-virtual-pipeline-stage" in flags else None)
    switches: dict[str, Any] = {field: (switch in flags) == given
                                for field, switch, given in MEGATRON_SWITCHES}
    config = ParallelConfig(
        tp=tp, pp=pp, dp=dp, cp=_int(flags, "--context-parallel-size", source, 1),
        ep=_int(flags, "--expert-model-parallel-size", source, 1),
        etp=(_int(flags, "--expert-tensor-parallel-size", source)
             if "--expert-tensor-parallel-size" in flags else None),
        vpp=vpp, mbs=_int(flags, "--micro-batch-size", source, 1),
        global_batch=_int(flags, "--global-batch-size", source),
        seq_len=_int(flags, "--seq-length", source),
        recompute=recompute, recompute_num_layers=recompute_layers,
        recompute_modules=modules, zero=zero,
        sequence_parallel="--sequence-parallel" in flags, precision=precision,
        vocab_strategy=strategy, layers_per_stage=layout, layers_per_chunk=chunk_layout,
        flash_attention=flags.get("--attention-backend", "auto") not in ("unfused", "local"),
        attention_kernel=_KERNEL_OF_BACKEND.get(str(flags.get("--attention-backend", "auto")),
                                                AttentionKernel.AUTO),
        moe_grouped_gemm="--moe-grouped-gemm" in flags or "--num-experts" not in flags,
        embedding_wgrad_deferral=(_int(flags, "--wgrad-deferral-limit", source, 0)
                                  if "--defer-embedding-wgrad-compute" in flags else None),
        dist_opt_instances=_int(flags, "--num-distributed-optimizer-instances", source, 1),
        overlap_grad_reduce="--overlap-grad-reduce" in flags,
        # no distributed optimizer, no parameter gather: the field keeps its default
        overlap_param_gather="--overlap-param-gather" in flags or zero == 0,
        fp8_param_gather=fp8_gather, grad_reduce_in_bf16="--grad-reduce-in-bf16" in flags,
        **switches,
        bf16_layers=((_int(flags, "--num-layers-at-start-in-bf16", source, 1),
                      _int(flags, "--num-layers-at-end-in-bf16", source, 1))
                     if "--first-last-layers-bf16" in flags and precision is Precision.FP8
                     else (0, 0)),
        microbatch_group_size=group,
        rank_order="tp-cp-pp-dp" if "--use-tp-pp-dp-mapping" in flags else "tp-cp-dp-pp")
    return config, notes


def _layout(text: str, pp: int, source: str) -> tuple[int, ...]:
    """Decoder layers of each virtual stage of a --pipeline-model-parallel-layout string ("|"
    between virtual stages, X*N repeats, (...)*N repeats a group; virtual stage k runs on
    rank k % pp)."""
    expanded = text.replace(" ", "")
    for _ in range(10):
        new = re.sub(r"\(([^()]*)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), expanded)
        new = re.sub(r"([A-Za-z])\*(\d+)", lambda m: m.group(1) * int(m.group(2)), new)
        if new == expanded:
            break
        expanded = new
    stages = expanded.replace(",", "").split("|")
    if len(stages) % pp or re.search(r"[^EtmL|,]", expanded):
        raise InputError(f"{source}: --pipeline-model-parallel-layout {text!r}: expected "
                         f"a multiple of pp({pp}) stages of E, t, m and L")
    return tuple(stage.count("t") for stage in stages)


def import_megatron(text: str, source: str, dp: int | None, world_size: int | None,
                    model: ModelSpec | None,
                    read: Callable[[str], str | None] = lambda name: None) -> ImportedLaunch:
    """A Megatron launch as a model and configuration. The data-parallel degree comes from
    `dp`, else the world size (the script's torchrun line, else `world_size`)."""
    words, launcher_world = megatron_words(text, read)
    flags, unknown, ignored = parse_flags(words, source)
    from_flags = model_from_flags(flags, source, name=source.rsplit("/", 1)[-1])
    notes: list[str] = []
    if model is None:
        if from_flags is None:
            raise InputError(f"{source}: the arguments name no vocabulary size (Megatron takes "
                             "it from the tokenizer)",
                             hint="give --model, or add --vocab-size to the arguments")
        model = from_flags
    elif from_flags is not None or "--num-layers" in flags:
        mismatch = [f"{flag} {flags[flag]} vs {value}" for flag, value in (
            ("--num-layers", model.num_layers), ("--hidden-size", model.hidden_size),
            ("--num-attention-heads", model.num_attention_heads))
            if flag in flags and flags[flag] != str(value)]
        if mismatch:
            raise InputError(f"{source}: the arguments describe another model than --model "
                             f"{model.name}: " + "; ".join(mismatch))
    # Megatron runs the model with the launch's dropout, whatever the model file says
    model = dataclasses.replace(
        model, hidden_dropout=_dropout(flags, "--hidden-dropout", source),
        attention_dropout=_dropout(flags, "--attention-dropout", source))
    world = launcher_world or world_size
    tp = _int(flags, "--tensor-model-parallel-size", source, 1)
    pp = _int(flags, "--pipeline-model-parallel-size", source, 1)
    cp = _int(flags, "--context-parallel-size", source, 1)
    if dp is None:
        if world is None:
            raise InputError(f"{source}: no world size: the launch has no torchrun "
                             "--nnodes/--nproc-per-node", hint="give --dp or --cluster")
        if world % (tp * pp * cp):
            raise InputError(f"{source}: world size {world} is not divisible by tp({tp}) * "
                             f"pp({pp}) * cp({cp}) = {tp * pp * cp}")
        dp = world // (tp * pp * cp)
    config, config_notes = config_from_flags(flags, model.num_layers, dp, source)
    notes += config_notes
    return ImportedLaunch(model=model, config=config, world_size=launcher_world,
                          unknown=tuple(unknown), ignored=tuple(ignored), notes=tuple(notes))
