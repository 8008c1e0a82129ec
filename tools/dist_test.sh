#!/usr/bin/env bash
# Distributed evaluation with torchrun:  tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
set -euo pipefail
TOOLS=$(cd "$(dirname "$0")" && pwd)
exec bash "$TOOLS/torchrun.sh" "$3" "$TOOLS/test.py" "$1" "$2" --launcher pytorch "${@:4}"
