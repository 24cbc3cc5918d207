"""spark-submit entry point: `seg report`. Usage: spark-submit jobs/report.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="report"))
