#!/usr/bin/env bash
# Module-parallel training: one process per module and replica, K x R read from the config.
#   tools/pipeline_train.sh CONFIG [train.py args...]
# (the same as tools/dist_train.sh CONFIG K*R; pass --cfg-options that change K or R to dist_train.sh
# with the right count instead). NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON as for dist_train.sh.
set -euo pipefail
TOOLS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$TOOLS/.." && pwd)
PY=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}
NPROC=$(PYTHONPATH="$ROOT:${PYTHONPATH:-}" "$PY" - "$1" <<'PYEOF'
import sys
from mmengine.config import Config
from localvision.engine.pipeline.config import parse_pipeline_cfg, requested_num_stages
cfg = Config.fromfile(sys.argv[1])
if cfg.get('pipeline') is None:
    sys.exit(f'error: {sys.argv[1]} has no pipeline section (module-parallel settings)')
k = requested_num_stages(cfg.model)
if k is None:
    sys.exit('error: cannot read K from the config; use tools/dist_train.sh CONFIG K*R')
print(k * parse_pipeline_cfg(cfg.pipeline).replicas)
PYEOF
)
exec bash "$TOOLS/dist_train.sh" "$1" "$NPROC" "${@:2}"
