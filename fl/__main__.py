"""``python -m fl simulate | server | client | certs | sweep | audit | runs`` (see fl/runs/cli.py)."""

import sys

from fl.runs.cli import main

if __name__ == "__main__":
    sys.exit(main())
