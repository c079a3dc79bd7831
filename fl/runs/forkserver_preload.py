"""Imported once, in the forkserver only (fl/runs/processes.py ``PRELOAD``): its children never run the parent's
main script.

multiprocessing re-runs the parent's ``__main__`` in every child it starts
that way, as ``__mp_main__``, so that functions defined there can be
unpickled. The dashboard's ``__main__`` is app.py (Streamlit runs the page
as the main module), a test's is pytest: each worker process would start
the app, or the test run, again. A run's children run the engine's own
functions (``fl.runs.workers._host_main``, ``fl.runs.baselines_aside._child_main``),
importable by name, so in this process the re-run is turned off, as loky's
own start method does; the parent's processes are not touched.
"""

from multiprocessing import spawn

spawn._fixup_main_from_path = lambda main_path: None  # noqa: SLF001 (the stdlib's hook for exactly this step)
spawn._fixup_main_from_name = lambda mod_name: None  # noqa: SLF001
