#!/usr/bin/env bash
# Zero-shot PASCAL VOC 2012 val (paper: 53.8 mIoU) with the paper's harness (python -m main_seg).
# usage: scripts/test_voc12.sh CKPT [DATA_ROOT] [main_seg flags, e.g. --limit 50 --opts key=value]
#    or: CKPT=... DATA_ROOT=... scripts/test_voc12.sh [main_seg flags]
# DATA_ROOT defaults to ${OVSEG_DATA:-data}/VOCdevkit/VOC2012; results.json goes to ${OUTPUT:-output/test_voc12}.
exec "$(dirname "${BASH_SOURCE[0]}")/_main_seg.sh" test_voc12 VOCdevkit/VOC2012 "$@"
