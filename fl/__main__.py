"""``python -m fl simulate | server | client | certs | sweep | audit | runs`` (see fl/cli/main.py)."""

import sys

if __name__ == "__main__" and "simulate" in sys.argv[1:2]:
    # The forkserver that starts a run's worker processes imports the engine on the other core while this
    # process imports it too (fl/runs/processes.py): the run then finds it warm.
    from fl.runs.processes import warm_up

    warm_up()

from fl.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
