"""spark-submit entry point: `seg features`. Usage: spark-submit jobs/features.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="features"))
