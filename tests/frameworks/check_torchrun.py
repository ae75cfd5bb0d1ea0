"""Runs torchrun's own argument parser on the commands the launch scripts build; executed by
the frameworks' environment (tests/frameworks/setup.sh), never imported by the planner.

stdin: {"cases": [{"argv": [...]}, ...]}  (the words after `torchrun`)
stdout: one JSON list, per case {"ok", "error", "launch": {...}}.

torch.distributed.run.get_args_parser() + config_from_args(): nothing is started
(launchers.md Sec. 5).
"""

import contextlib
import io

from protocol import serve  # noqa: E402  (tests/frameworks, beside this script)
from torch.distributed.run import config_from_args, get_args_parser


def check(case):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = get_args_parser().parse_args(case["argv"])
            config, cmd, cmd_args = config_from_args(args)
    except SystemExit as exc:
        return {"ok": False, "error": f"SystemExit({exc.code}): {err.getvalue()[-500:]}"}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "error": "", "launch": {
        "min_nodes": config.min_nodes, "max_nodes": config.max_nodes,
        "nproc_per_node": config.nproc_per_node, "rdzv_backend": config.rdzv_backend,
        "rdzv_endpoint": config.rdzv_endpoint,
        "node_rank": config.rdzv_configs.get("rank"), "cmd": cmd, "cmd_args": cmd_args}}


if __name__ == "__main__":
    serve(check)
