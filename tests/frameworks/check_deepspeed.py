"""Runs DeepSpeed's own configuration and hostfile parsing on emitted files; executed by the
frameworks' environment (tests/frameworks/setup.sh), never imported by the planner.

stdin: {"cases": [{"config": {...}, "dp": N, "hostfile": "..." or null,
                   "launcher_argv": [...] or null}, ...]}
stdout: one JSON list, per case {"ok", "error", "parsed": {...}}.

DeepSpeedConfig(config, mpu) on a fake process group, so the batch checks use the real
data-parallel size (launchers.md Sec. 3); deepspeed.launcher.runner._parse_hostfile for the
hostfile, and the `deepspeed` launcher's own argument parser (runner.parse_args, fetch_hostfile)
for launch_deepspeed.sh. DeepSpeed ignores unknown top-level keys, so the parsed values are
returned for the tests to compare with what was written.
"""

import contextlib
import io
import os

os.environ.setdefault("DS_ACCELERATOR", "cuda")  # "cpu" JIT-compiles a comm op for ~45 s

import deepspeed.comm as dist  # noqa: E402
import torch.distributed as tdist  # noqa: E402
from deepspeed.launcher.runner import _parse_hostfile, fetch_hostfile  # noqa: E402
from deepspeed.launcher.runner import parse_args as runner_args  # noqa: E402
from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402
from protocol import serve  # noqa: E402  (tests/frameworks, beside this script)
from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: E402


class _Mpu:
    """Megatron-style model-parallel unit: DeepSpeedConfig reads only the DP size."""

    def __init__(self, dp):
        self.dp = dp

    def get_data_parallel_world_size(self):
        return self.dp


def check(case):
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if not tdist.is_initialized():
                tdist.init_process_group("fake", store=FakeStore(), rank=0,
                                         world_size=case["dp"])
                dist.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
            c = DeepSpeedConfig(case["config"], mpu=_Mpu(case["dp"]))
            hosts = (dict(_parse_hostfile(case["hostfile"].splitlines()))
                     if case.get("hostfile") else None)
            launcher = None
            if case.get("launcher_argv"):  # the deepspeed launcher's own parser
                args = runner_args(case["launcher_argv"])
                launcher = {"num_nodes": args.num_nodes, "num_gpus": args.num_gpus,
                            "master_addr": args.master_addr, "user_script": args.user_script,
                            "user_args": args.user_args,
                            "hosts": dict(fetch_hostfile(args.hostfile))}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "error": "", "parsed": {
        "train_batch_size": c.train_batch_size,
        "micro_batch": c.train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "zero_stage": c.zero_optimization_stage, "bf16": c.bfloat16_config.enabled,
        "overlap_comm": c.zero_config.overlap_comm, "hosts": hosts, "launcher": launcher}}


if __name__ == "__main__":
    serve(check)
