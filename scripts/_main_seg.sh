#!/usr/bin/env bash
# Shared by scripts/test_*.sh: run main_seg with one benchmark config.
# usage: _main_seg.sh CONFIG_NAME DEFAULT_DATA_SUBDIR [CKPT] [DATA_ROOT] [main_seg flags]
set -euo pipefail
NAME="$1" SUBDIR="$2"
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then CKPT="$1"; shift; fi
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then DATA_ROOT="$1"; shift; fi
if [ -z "${CKPT:-}" ]; then
  echo "usage: scripts/${NAME/voc_context/context}.sh CKPT [DATA_ROOT] [main_seg flags]" >&2
  exit 2
fi
DATA_ROOT="${DATA_ROOT:-${OVSEG_DATA:-data}/$SUBDIR}"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec python -u -m main_seg --cfg "$ROOT/configs/$NAME.yml" \
  --resume "$CKPT" --data-root "$DATA_ROOT" --output "${OUTPUT:-output/$NAME}" "$@"
