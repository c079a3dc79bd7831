"""Where run-setting widgets keep their values, and whether they can be changed.

The Run page's sidebar and the Deploy page draw the same widgets; each page
gets its own key prefix (``cfg_`` and ``deploy_cfg_``), so changing a
setting on one page never changes the run another page describes. While a
run is going, the Run page locks its widgets: the sidebar then always
describes the run on screen. The scope is a ContextVar because every
browser session runs its script in its own thread.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

import streamlit as st


@dataclass(frozen=True)
class Scope:
    prefix: str = "cfg_"
    locked: bool = False


_SCOPE: ContextVar[Scope] = ContextVar("widget_scope", default=Scope())


@contextlib.contextmanager
def scope(prefix: str = "cfg_", locked: bool = False) -> Iterator[None]:
    """Draw the widgets inside under ``prefix`` keys, disabled when ``locked``."""
    token = _SCOPE.set(Scope(prefix, locked))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def key(name: str) -> str:
    return f"{_SCOPE.get().prefix}{name}"


def locked() -> bool:
    return _SCOPE.get().locked


def init(name: str, value: Any) -> None:
    st.session_state.setdefault(key(name), value)


def kw(name: str, default: Any = None) -> dict[str, Any]:
    """Keyword arguments of a setting's widget: its key (kept for the session) and whether it is locked."""
    if default is not None:
        init(name, default)
    return {"key": key(name), "persist_state": "session", "disabled": locked()}
