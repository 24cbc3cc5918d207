"""spark-submit entry point: `seg score`. Usage: spark-submit jobs/score.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="score"))
