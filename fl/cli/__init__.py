"""The command line: ``python -m fl simulate | server | client | certs | sweep | audit | runs``.

The layer above the engine (fl/runs and below): one module per command, and
``fl.cli.main`` builds the parser and runs the command. Nothing of the engine
or the pages imports it.
"""
