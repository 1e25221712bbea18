"""The seed's demo entry point, run from the repository root:

    python -u -m main_demo --cfg configs/test_voc12.yml --resume CKPT --vis input_pred_label --vocab voc \\
        --image_folder IN/ --output_folder OUT/

It is ``ovseg demo`` with the same flags (see ``docs/demo.md``).
"""

import sys

from ovseg.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
