#!/usr/bin/env bash
# torchrun with the OpenMMLab environment variables, shared by dist_train.sh and dist_test.sh:
#   tools/torchrun.sh NPROC SCRIPT [args...]
# NNODES, NODE_RANK, MASTER_ADDR, PORT: the node layout; PYTHON: the interpreter
# (default: the repository's .venv). A failing rank ends the job: torchrun stops the others and
# names the failed rank in its summary. On Ctrl-C / SIGTERM torchrun passes the signal on and waits
# SHUTDOWN_TIMEOUT seconds (default 120) before killing: time for a run to save what it trained.
set -euo pipefail
NPROC=$1
SCRIPT=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
# (set through the environment, which torch versions without the option simply ignore)
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-120}}
PYTHONPATH="$ROOT:${PYTHONPATH:-}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
exec "$PY" -m torch.distributed.run --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
  --max-restarts=0 --monitor-interval=0.5 "$SCRIPT" "${@:3}"
