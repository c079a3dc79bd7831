"""Host a federated run for client processes: ``python server_new.py --help``.

A thin entry point to ``python -m fl server``.
"""

import sys

from fl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["server", *sys.argv[1:]]))
