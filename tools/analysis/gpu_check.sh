#!/usr/bin/env bash
# One-command GPU check (issue 15, item 4); see tools/analysis/gpu_check.py for what it runs.
#
#   bash tools/analysis/gpu_check.sh [gpu_check.py options]     # or: make gpu-check
#
# Needs python with torch, torchvision and timm, and work_dirs/gpu_wheels (made here with
# `python tools/analysis/gpu_check.py --fetch-wheels`: mmengine, mmpretrain, an mmcv-lite wheel built
# from mmcv's sdist, matplotlib, pytest); no network, no OpenMMLab packages needed on the machine.
# Environment: OUT (results; default work_dirs/gpu_check), LV_GPU_CHECK_PYTHON (default: the first
# of python3 / python with torch), LV_GPU_CHECK_ALLOW_CPU=1 (CPU dry run, tiny sizes),
# LV_GPU_CHECK_BUDGET_S (default 360; the hard limit is 15 s more), LV_GPU_CHECK_BLOCK=mmseg,mmdet,...
# (simulate a machine without those packages).
# Always ends with $OUT/gpu_check.json: if the driver itself dies or overruns, a minimal one says so.
set -u
cd "$(dirname "$0")/../.."
export OUT="${OUT:-work_dirs/gpu_check}"
# the first of python3 / python that has torch (the check's parts need it), else python3
PY="${LV_GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
    for c in python3 python; do
        if command -v "$c" >/dev/null && "$c" -c 'import torch' 2>/dev/null; then PY="$(command -v "$c")"; break; fi
    done
    PY="${PY:-$(command -v python3 || command -v python || echo python3)}"
fi
export LV_GPU_CHECK_PYTHON="$PY"
BUDGET="${LV_GPU_CHECK_BUDGET_S:-360}"
mkdir -p "$OUT"
rm -f "$OUT/gpu_check.json"

# the driver keeps to its budget; this hard limit is only for a driver that hangs itself
LIMIT=()
if command -v timeout >/dev/null; then LIMIT=(timeout -k 5 "$(( ${BUDGET%.*} + 15 ))"); fi
${LIMIT[@]+"${LIMIT[@]}"} "$PY" tools/analysis/gpu_check.py --out "$OUT" "$@"
rc=$?

if [ ! -s "$OUT/gpu_check.json" ] || ! grep -q '"finished": true' "$OUT/gpu_check.json"; then
    echo "gpu_check.py ended with exit code $rc before finishing" | tee -a "$OUT/gpu_check.log"
    if [ ! -s "$OUT/gpu_check.json" ]; then
        printf '{"tool": "tools/analysis/gpu_check.sh", "finished": false, "driver_exit_code": %d, "python": "%s", "parts": {}}\n' \
            "$rc" "$PY" > "$OUT/gpu_check.json"
    fi
fi
exit "$rc"
