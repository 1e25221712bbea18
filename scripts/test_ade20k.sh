#!/usr/bin/env bash
# Zero-shot ADE20K val (paper: 5.6 mIoU) with the paper's harness (python -m main_seg).
# usage: scripts/test_ade20k.sh CKPT [DATA_ROOT] [main_seg flags, e.g. --limit 50 --opts key=value]
#    or: CKPT=... DATA_ROOT=... scripts/test_ade20k.sh [main_seg flags]
# DATA_ROOT defaults to ${OVSEG_DATA:-data}/ade/ADEChallengeData2016; results.json goes to ${OUTPUT:-output/test_ade20k}.
exec "$(dirname "${BASH_SOURCE[0]}")/_main_seg.sh" test_ade20k ade/ADEChallengeData2016 "$@"
