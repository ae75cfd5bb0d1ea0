#!/usr/bin/env bash
# Builds the environment that holds the frameworks' own config parsers, used by
# tests/frameworks (Megatron-LM parse_args + validate_args, torchtitan ConfigManager +
# ParallelDims, DeepSpeed DeepSpeedConfig, torchrun's argument parser). Installed from PyPI at
# test time; none of their code is in this repository. Recipe and traps:
# shared/reference/launchers.md.
#
# usage: tests/frameworks/setup.sh DIR     (DIR/.ok is written when everything imports)
set -euo pipefail
dir=${1:?usage: setup.sh DIR}
py=${PYTHON:-python3}
rm -f "$dir/.ok"
[ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
pip=("$dir/bin/python" -m pip install -q --disable-pip-version-check)
# torch first and pinned: anything that lets pip choose a newer torch downloads a CUDA build.
"${pip[@]}" "torch==2.13.0"
DS_BUILD_OPS=0 "${pip[@]}" "torch==2.13.0" "torchtitan==0.3.0" "deepspeed==0.19.8" triton \
    "packaging>=24.2" typing_extensions numpy
# megatron-core >= 0.17 ships megatron/training/ but declares Python >= 3.12 (cp312 wheels of
# pure Python); its argument code runs on 3.11 with a typing.override shim (check_megatron.py).
"${pip[@]}" --no-deps --ignore-requires-python --target "$dir/mcore" --python-version 3.12 \
    --only-binary=:all: --upgrade "megatron-core==0.19.2"
PYTHONPATH="$dir/mcore" "$dir/bin/python" - <<'PY'
import typing, typing_extensions
typing.override = getattr(typing, "override", typing_extensions.override)
import deepspeed.runtime.config, torch.distributed.run, torchtitan.config.manager  # noqa: F401
import megatron.training.arguments  # noqa: F401
PY
"$dir/bin/python" -c 'import sys; print(sys.version.split()[0])' > "$dir/.ok"
