#!/usr/bin/env bash
# Zero-shot COCO-Object val2017 (paper: 25.1 mIoU) with the paper's harness (python -m main_seg).
# usage: scripts/test_coco.sh CKPT [DATA_ROOT] [main_seg flags, e.g. --limit 50 --opts key=value]
#    or: CKPT=... DATA_ROOT=... scripts/test_coco.sh [main_seg flags]
# DATA_ROOT defaults to ${OVSEG_DATA:-data}/coco; results.json goes to ${OUTPUT:-output/test_coco}.
exec "$(dirname "${BASH_SOURCE[0]}")/_main_seg.sh" test_coco coco "$@"
