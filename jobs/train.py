"""spark-submit entry point: `seg train`. Usage: spark-submit jobs/train.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="train"))
