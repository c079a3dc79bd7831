"""client_new.py whose process dies (os._exit, no goodbye) when asked to unmask: after its masked input went out.

A test stand-in for a site whose machine fails mid-round (tests/test_secure_rounds.py); the client itself is
the product's, unchanged.
"""

import os
import sys

from fl.federation.client import FederatedClient
from fl.cli.main import main

_fit = FederatedClient.handle_fit


def _dies_when_asked_to_unmask(self, msg):
    if msg.config.get("secagg") == "unmask":
        os._exit(17)
    return _fit(self, msg)


FederatedClient.handle_fit = _dies_when_asked_to_unmask

if __name__ == "__main__":
    sys.exit(main(["client", *sys.argv[1:]]))
