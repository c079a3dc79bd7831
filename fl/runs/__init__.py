"""Runs: the declarative RunConfig, build_run, simulations, hosted runs, the run store, the live
state, the registry, baselines and the command line. The top layer; nothing below imports it."""
