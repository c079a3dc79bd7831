"""Join a federated run with local data: ``python client_new.py --help``.

A thin entry point to ``python -m fl client``.
"""

import sys

from fl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["client", *sys.argv[1:]]))
