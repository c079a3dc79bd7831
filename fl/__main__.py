"""``python -m fl simulate | server | client | certs | sweep | audit | runs`` (see fl/cli/main.py)."""

import sys

from fl.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
