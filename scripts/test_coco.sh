#!/usr/bin/env bash
# Zero-shot COCO-Object val2017 (paper: 25.1 mIoU) with the paper's harness (python -m main_seg).
# usage: scripts/test_coco.sh CKPT [DATA_ROOT] [main_seg flags, e.g. --limit 50 --opts key=value]
#    or: CKPT=... DATA_ROOT=... scripts/test_coco.sh [main_seg flags]
# DATA_ROOT defaults to ${OVSEG_DATA:-data}/coco; results.json goes to ${OUTPUT:-output/test_coco}.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then CKPT="$1"; shift; fi
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then DATA_ROOT="$1"; shift; fi
if [ -z "${CKPT:-}" ]; then
  echo "usage: $0 CKPT [DATA_ROOT] [main_seg flags]" >&2
  exit 2
fi
DATA_ROOT="${DATA_ROOT:-${OVSEG_DATA:-data}/coco}"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec python -u -m main_seg --cfg "$ROOT/configs/test_coco.yml" \
  --resume "$CKPT" --data-root "$DATA_ROOT" --output "${OUTPUT:-output/test_coco}" "$@"
