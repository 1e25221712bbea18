#!/usr/bin/env bash
# The seed's demo script: segment a folder of photos with the 20 PASCAL VOC classes (GroupViT's names:
# table, plant, monitor), runnable from any folder. Extra flags go to main_demo (e.g. --vis mask --recursive).
#
#   scripts/demo.sh CHECKPOINT IMAGE_FOLDER OUTPUT_FOLDER [main_demo flags ...]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CHECKPOINT IMAGE_FOLDER OUTPUT_FOLDER [main_demo flags ...]" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CKPT=$1 IMAGES=$2 OUTPUT=$3
shift 3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
python -u -m main_demo --cfg "$ROOT/configs/test_voc12.yml" --resume "$CKPT" --vis input_pred_label mask \
    --vocab aeroplane bicycle bird boat bottle bus car cat chair cow table dog horse motorbike person plant \
    sheep sofa train monitor \
    --image_folder "$IMAGES" --output_folder "$OUTPUT" "$@"
