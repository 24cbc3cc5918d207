"""spark-submit entry point: `seg cluster`. Usage: spark-submit jobs/cluster.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="cluster"))
