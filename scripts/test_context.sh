#!/usr/bin/env bash
# Zero-shot PASCAL Context val (paper: 20.4 mIoU) with the paper's harness (python -m main_seg).
# usage: scripts/test_context.sh CKPT [DATA_ROOT] [main_seg flags, e.g. --limit 50 --opts key=value]
#    or: CKPT=... DATA_ROOT=... scripts/test_context.sh [main_seg flags]
# DATA_ROOT defaults to ${OVSEG_DATA:-data}/VOCdevkit/VOC2010; results.json goes to ${OUTPUT:-output/test_context}.
exec "$(dirname "${BASH_SOURCE[0]}")/_main_seg.sh" test_voc_context VOCdevkit/VOC2010 "$@"
