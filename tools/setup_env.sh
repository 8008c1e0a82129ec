#!/usr/bin/env bash
# Idempotent set-up of localvision's development environment.
#
#   bash tools/setup_env.sh
#
# Creates ./.venv (or $LV_VENV) and installs the verified stack of requirements/constraints.txt:
# its torch/torchvision pair first, then mmcv with its compiled ops, built once (the wheel is
# cached under a key made of the Python tag, the torch version and its CUDA version, so a torch
# change can never reuse a wheel built against another torch), then the OpenMMLab stack and
# localvision in editable mode with its extras (`.[all,test]`), under the constraints.
# A second run on a warm machine checks the stamp and the imports and returns in seconds.
#
# Knobs (environment variables):
#   LV_PYTHON         interpreter used to create the venv            (default: python3)
#   LV_VENV           where the venv lives                           (default: .venv)
#   LV_TORCH_SPEC     pip requirement for torch                      (default: the constraints' torch line)
#   LV_TORCHVISION_SPEC  pip requirement for torchvision             (default: the constraints' torchvision line)
#   LV_WHEEL_CACHE    where built mmcv wheels are kept               (default: ~/.cache/localvision/wheels)
#   LV_FORCE_SETUP=1  redo every step even if the stamp matches
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PY=${LV_PYTHON:-python3}
VENV=${LV_VENV:-.venv}
CONSTRAINTS=requirements/constraints.txt
pinned() { grep -E "^$1==" "$CONSTRAINTS" | head -n 1; }
# The default torch line excludes the local "+cpu" build: pip configurations on these machines add
# a find-links folder holding torch-2.13.0+cpu, which pip prefers for "torch==2.13.0" (a local
# label sorts higher) but which breaks the registry's torchvision (it links CUDA torch libs).
TORCH_SPEC=${LV_TORCH_SPEC:-$(pinned torch)}
TORCHVISION_SPEC=${LV_TORCHVISION_SPEC:-$(pinned torchvision)}
MMCV_VERSION=$(pinned mmcv | cut -d= -f3)
WHEEL_CACHE=${LV_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localvision/wheels}

log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
VPY="$ROOT/$VENV/bin/python"
[ -x "$VPY" ] || VPY="$VENV/bin/python"
# pip, with the noise of the machine's own configuration (index folders that do not exist) left out
pip_q() {
  "$VPY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
  return "${PIPESTATUS[0]}"
}

# The stamp records what this set-up was made from; if nothing changed and the stack imports,
# there is nothing to do.
stamp_file="$VENV/.localvision-setup"
stamp=$( { echo "$TORCH_SPEC|$TORCHVISION_SPEC|$MMCV_VERSION"; cat pyproject.toml "$CONSTRAINTS"; } | sha256sum | cut -c1-16)
check_imports() {
  "$VPY" - <<'PY' 2>/dev/null
import torch, torchvision, timm, mmengine, mmcv
from mmcv.ops import nms  # compiled ops, not mmcv-lite
import mmpretrain.models, mmseg.models, mmdet.models, localvision
PY
}
if [ "${LV_FORCE_SETUP:-0}" != 1 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] && check_imports; then
  log "environment $VENV is up to date"
  exit 0
fi

if [ -n "$("$VPY" -m pip config list 2>/dev/null | grep -i find-links || true)" ] && [ -z "${LV_TORCH_SPEC:-}" ]; then
  log "note: your pip configuration adds find-links; torch is requested as '$TORCH_SPEC' so a local"
  log "      CPU-only build is not picked (it breaks torchvision). Set LV_TORCH_SPEC to choose another build."
fi

# torch with CUDA libraries takes about 6 GB in the venv; stop early with one line when the disk is
# fuller than that (pip would fail half-way with "No space left on device")
NEED_GB=${LV_SETUP_NEED_GB:-8}
free_kb=$(df -Pk "$VENV" 2>/dev/null | awk 'NR==2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((NEED_GB * 1024 * 1024)) ] && ! "$VPY" -c 'import torch' 2>/dev/null; then
  echo "error: only $((free_kb / 1024)) MB free where $VENV lives; the set-up needs about ${NEED_GB} GB (torch," \
       "torchvision, OpenMMLab): free some space (old work_dirs/, other clones' .venv, ~/.cache/pip) and run again" >&2
  exit 1
fi

log "installing build tools"
pip_q install -q --upgrade pip 'setuptools>=77,<81' wheel ninja

log "installing $TORCH_SPEC and $TORCHVISION_SPEC"
pip_q install -q "$TORCH_SPEC" "$TORCHVISION_SPEC"

key=$("$VPY" -c 'import sys, torch; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}-cuda{torch.version.cuda}-cxxabi{int(torch._C._GLIBCXX_USE_CXX11_ABI)}")')
wheel_dir="$WHEEL_CACHE/mmcv-$MMCV_VERSION/$key"
wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  jobs=${MAX_JOBS:-$(nproc)}
  # measured: about 28 minutes for its 77 objects on 2 cores; the compile runs in parallel
  log "building mmcv $MMCV_VERSION with compiled ops against $key, once (about $(( 56 / jobs + 2 )) minutes with $jobs jobs)"
  tmp=$(mktemp -d)
  mkdir "$tmp/build"
  MMCV_WITH_OPS=1 MAX_JOBS=$jobs TMPDIR="$tmp/build" pip_q wheel -q --no-build-isolation --no-deps \
    --no-cache-dir -w "$tmp" "mmcv==$MMCV_VERSION" &
  build=$!
  start=$SECONDS
  while kill -0 "$build" 2>/dev/null; do  # progress: compiled objects of the 77, once a minute
    for _ in $(seq 60); do kill -0 "$build" 2>/dev/null || break; sleep 1; done
    if kill -0 "$build" 2>/dev/null; then
      done_objs=$(find "$tmp/build" -name '*.o' 2>/dev/null | wc -l)
      secs=$(( SECONDS - start ))
      left=$( [ "$done_objs" -gt 0 ] && echo "about $(( secs * (77 - done_objs) / done_objs / 60 + 1 )) min left" || echo "compiling" )
      log "  mmcv build: $done_objs/77 objects after $(( secs / 60 )) min, $left"
    fi
  done
  wait "$build"
  mkdir -p "$wheel_dir"
  mv "$tmp"/mmcv-*.whl "$wheel_dir"/
  rm -rf "$tmp"
  wheel=$(ls "$wheel_dir"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
else
  log "reusing cached mmcv wheel $wheel"
fi
pip_q install -q --force-reinstall --no-deps "$wheel"

log "installing localvision (editable) with the OpenMMLab stack and test extras (constraints: $CONSTRAINTS)"
# torch and torchvision are installed already (LV_TORCH_SPEC may have chosen others): constrain the rest
others=$(mktemp)
grep -vE '^(torch|torchvision)([=<>!~ ]|$)' "$CONSTRAINTS" > "$others"
pip_q install -q -c "$others" -e ".[all,test]"
rm -f "$others"

if ! check_imports; then
  log "ERROR: the stack does not import after set-up; run: $VPY -c 'import mmpretrain.models, mmseg.models, mmdet.models'"
  exit 1
fi
echo "$stamp" > "$stamp_file"
log "done: $("$VPY" -c 'import torch, torchvision, timm, mmcv, mmengine, mmseg, mmdet; print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmseg {mmseg.__version__}, mmdet {mmdet.__version__}")')"
