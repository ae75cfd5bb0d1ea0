"""Where each rank runs, and the torchrun / Slurm scripts that put it there.

The plan's placement is the default one: global rank r runs on GPU r of the cluster in profile
order (node r // g, local GPU r % g for g GPUs per node); every cost the planner computed assumes
it (cost/comm.py resolves each group's links that way). A launch realises it with stock tools
(shared/reference/launchers.md Sec. 5): torchrun's static rendezvous numbers ranks by
--node-rank and then LOCAL_RANK, so node k gets node rank k; inside a node,
CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA's device i the i-th GPU of `nvidia-smi`, and
CUDA_VISIBLE_DEVICES lists the physical GPU of each local rank (0..g-1 for this placement).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from planner.errors import InputError
from planner.hardware import Cluster

TORCHRUN_VERSION = "torch 2.13 (torch.distributed.run)"
MASTER_PORT = 29500  # torchrun's default --master-port


@dataclass(frozen=True, slots=True)
class Placement:
    """Nodes in node-rank order and the devices each node's processes use.

    Attributes:
        hosts: host names in node-rank order; empty when the profile names no hosts and none
            were given (the scripts then take node ranks from Slurm or NODE_RANK).
        num_nodes: nodes the job uses.
        procs_per_node: processes (GPUs) per node.
        visible_devices: CUDA_VISIBLE_DEVICES on every node: local rank i uses this GPU.
    """

    hosts: tuple[str, ...]
    num_nodes: int
    procs_per_node: int
    visible_devices: tuple[int, ...]


def default_placement(cluster: Cluster, world_size: int,
                      hosts: tuple[str, ...] | None = None) -> Placement:
    """Rank r on GPU r: the first world_size / g nodes of the profile, every GPU of each."""
    if world_size > cluster.num_gpus:
        raise InputError(f"the plan needs {world_size} GPUs; cluster {cluster.name} has "
                         f"{cluster.num_gpus}", hint="emit against the cluster it was planned on")
    per_node = cluster.nodes[0].node_type.num_gpus
    num_nodes = -(-world_size // per_node)
    used = cluster.nodes[:num_nodes]
    if any(node.node_type.num_gpus != per_node for node in used):
        raise InputError(f"cluster {cluster.name}: the first {num_nodes} nodes have different "
                         "GPU counts; torchrun and Slurm start the same number of processes on "
                         "every node")
    procs = min(per_node, world_size)
    if world_size % procs:
        raise InputError(f"the plan's {world_size} GPUs do not fill whole {per_node}-GPU nodes; "
                         "launchers start the same number of processes on every node",
                         hint="plan for a multiple of the GPUs per node")
    if hosts is None and cluster.named_nodes:
        hosts = tuple(node.name for node in used)
    if hosts is not None and len(hosts) < num_nodes:
        raise InputError(f"--hosts names {len(hosts)} hosts; the plan needs {num_nodes}")
    return Placement(hosts=tuple(hosts[:num_nodes]) if hosts else (), num_nodes=num_nodes,
                     procs_per_node=procs, visible_devices=tuple(range(procs)))


def hostfile(placement: Placement) -> str:
    """One `host slots=N` line per node, in node-rank order (DeepSpeed's hostfile format,
    deepspeed/launcher/runner.py _parse_hostfile; torchrun/Slurm scripts read the first
    column)."""
    return "".join(f"{host} slots={placement.procs_per_node}\n" for host in placement.hosts)


def env_script(placement: Placement, extra: tuple[tuple[str, str | None, str], ...],
               header: str) -> str:
    """env.sh: the placement's device order plus the framework's variables."""
    lines = [f"# {header}", "# Sourced by the launch scripts; source it yourself for a custom "
             "launch.",
             "# CUDA device i = the i-th GPU of nvidia-smi (the default order is fastest-first)",
             "export CUDA_DEVICE_ORDER=PCI_BUS_ID",
             "# local rank i uses the i-th GPU listed: the plan's rank-to-GPU placement",
             "export CUDA_VISIBLE_DEVICES=" + ",".join(map(str, placement.visible_devices))]
    for name, value, why in extra:
        lines.append(f"# {why}")
        lines.append(f"unset {name}" if value is None else f"export {name}={value}")
    return "\n".join(lines) + "\n"


def torchrun_script(placement: Placement, entry: str, args_file: str, header: str,
                    required: tuple[tuple[str, str], ...]) -> str:
    """launch_torchrun.sh: run on every node; static rendezvous, node rank fixed.

    The node rank is NODE_RANK when set, else this host's line in `hostfile`; the master is
    MASTER_ADDR or the hostfile's first host. `entry` is the torchrun program (a script path or
    `-m module`), followed by $TRAIN_ARGS and then the flags of `args_file`: the plan's flags
    come last, so they win over a repeated one (argparse and tyro keep the last), and
    torchtitan's activation-checkpoint subcommand stays last (tyro rejects options after it).
    """
    checks = "\n".join(f': "${{{name}:?{message}}}"' for name, message in required)
    flags = f' $(cat "$here/{args_file}")' if args_file else ""
    return f"""#!/usr/bin/env bash
# {header}
# Run on every node of the job: bash launch_torchrun.sh
# Node rank: $NODE_RANK, else this host's line in ./hostfile. Master: $MASTER_ADDR,
# else the hostfile's first host. Static rendezvous: global rank =
# node rank x {placement.procs_per_node} + local rank, the plan's placement.
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
source "$here/env.sh"
{checks}
if [ -z "${{NODE_RANK:-}}" ] && [ -f "$here/hostfile" ]; then
  NODE_RANK=$(awk -v a="$(hostname -s)" -v b="$(hostname)" \\
    '$1 == a || $1 == b {{ print NR - 1; exit }}' "$here/hostfile")
fi
: "${{NODE_RANK:?set NODE_RANK (0..{placement.num_nodes - 1}) or list this host in hostfile}}"
if [ -z "${{MASTER_ADDR:-}}" ] && [ -f "$here/hostfile" ]; then
  MASTER_ADDR=$(awk 'NR == 1 {{ print $1 }}' "$here/hostfile")
fi
: "${{MASTER_ADDR:?set MASTER_ADDR to the host of node rank 0}}"
set -f  # the flags hold brackets and bars; no globbing when they are split into words
# shellcheck disable=SC2046,SC2086
exec torchrun --nnodes {placement.num_nodes} --nproc-per-node {placement.procs_per_node} \\
  --node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" \\
  --master-port "${{MASTER_PORT:-{MASTER_PORT}}}" --rdzv-backend static \\
  {entry} ${{TRAIN_ARGS:-}}{flags}
"""


def slurm_script(placement: Placement, job_name: str, header: str) -> str:
    """launch_slurm.sbatch: one task per node runs launch_torchrun.sh.

    With a hostfile the node rank comes from it (so Slurm's node order does not matter);
    without one it is SLURM_NODEID, i.e. the allocation's order.
    """
    nodelist = (f"#SBATCH --nodelist={','.join(placement.hosts)}\n" if placement.hosts else "")
    return f"""#!/usr/bin/env bash
#SBATCH --job-name={shlex.quote(job_name)}
#SBATCH --nodes={placement.num_nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={placement.procs_per_node}
#SBATCH --exclusive
{nodelist}# {header}
# Submit from this directory: sbatch launch_slurm.sbatch (TRAIN_ARGS and the variables
# launch_torchrun.sh asks for are passed through from the submitting shell).
set -euo pipefail
here=${{PLAN_DIR:-${{SLURM_SUBMIT_DIR:-$(pwd)}}}}
if [ -f "$here/hostfile" ]; then  # node ranks and master from the hostfile
  srun --kill-on-bad-exit=1 bash "$here/launch_torchrun.sh"
else  # node ranks in the allocation's order
  MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # reads all: no SIGPIPE
  export MASTER_ADDR
  srun --kill-on-bad-exit=1 bash -c "NODE_RANK=\\$SLURM_NODEID exec bash '$here/launch_torchrun.sh'"
fi
"""


def deepspeed_script(placement: Placement, header: str) -> str:
    """launch_deepspeed.sh: DeepSpeed's own multi-node launcher (pdsh) on the hostfile, run on
    the first host. Ranks follow the hostfile's order and each host's slots in ascending order
    (deepspeed/launcher/runner.py), which is the plan's placement; the launcher sets
    CUDA_VISIBLE_DEVICES itself."""
    return f"""#!/usr/bin/env bash
# {header}
# Run once, on the first host of ./hostfile: bash launch_deepspeed.sh
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
: "${{TRAIN_SCRIPT:?set TRAIN_SCRIPT to your DeepSpeed training script}}"
export CUDA_DEVICE_ORDER=PCI_BUS_ID
# shellcheck disable=SC2086
exec deepspeed --hostfile "$here/hostfile" --num_nodes {placement.num_nodes} \\
  --num_gpus {placement.procs_per_node} --master_addr {placement.hosts[0]} \\
  --master_port "${{MASTER_PORT:-{MASTER_PORT}}}" \\
  "$TRAIN_SCRIPT" --deepspeed --deepspeed_config "$here/ds_config.json" ${{TRAIN_ARGS:-}}
"""
