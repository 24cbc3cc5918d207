"""spark-submit entry point: `seg run`. Usage: spark-submit jobs/run.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="run"))
