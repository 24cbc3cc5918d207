"""spark-submit entry point: `seg generate`. Usage: spark-submit jobs/generate.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="generate"))
