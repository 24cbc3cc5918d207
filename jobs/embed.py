"""spark-submit entry point: `seg embed`. Usage: spark-submit jobs/embed.py [--config FILE] [--set KEY=VALUE ...]"""

import sys

from seglib.cli import main

if __name__ == "__main__":
    sys.exit(main(command="embed"))
