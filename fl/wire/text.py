"""Text that came from a peer, made safe to keep and to show: capped in length, control characters escaped.

A peer chooses the strings it sends (an error message, a metric that should
have been a number, a label, a column name). Kept as they are, a 300 KB
string lands in every file and table the run writes (a CSV cell larger than
Python's csv field limit cannot even be read back), and an ANSI escape
sequence or a carriage return reaches the operator's terminal, where it can
rewrite lines, hide text or change colours; a bidi override reorders what is
read. ``capped`` bounds the length, ``bounded`` every string inside a value
(what an event keeps), ``shown`` makes one line of plain printable text;
``safe`` caps and escapes. These are the only helpers for that, so every
keeper caps and every printer escapes the same way.
"""

from __future__ import annotations

import re

MAX_TEXT = 1000  # characters of one peer string kept in an event, a CSV cell or a line on the terminal

# C0 and C1 controls and DEL (ESC, CR, LF, BEL, backspace, ...), the bidi embeddings, overrides and isolates
# (a label can be made to read backwards), and the Unicode line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def shown(text: object) -> str:
    """``text`` as one line of printable characters: every control character written as its escape
    (ESC as ``\\x1b``, a newline as ``\\n``), so a peer can neither drive the terminal nor forge a line."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s) if _UNSAFE.search(s) else s


def capped(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` in at most ``limit`` characters: cut, ending with how long it was (a peer's 300 KB string is
    kept as its first 978 characters and "… (300,000 characters)"). Capping twice changes nothing."""
    if len(text) <= limit:
        return text
    said = f"… ({len(text):,} characters)"
    return text[:max(limit - len(said), 0)] + said


MAX_DEPTH = 6  # JSON nested deeper than this is kept as (capped) text: no event needs it, a peer may send it


def bounded(value: object, limit: int = MAX_TEXT, depth: int = 0) -> object:
    """``value`` with every string in it (list items, dict keys and values, nested) capped at ``limit``; numbers
    and other scalars as they are. Lists of numbers (a confusion matrix, epoch losses) are only looked at."""
    if isinstance(value, str):
        return capped(value, limit)
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return capped(str(value), limit)
        if all(type(v) in _SCALARS for v in value):
            return value
        return [bounded(v, limit, depth + 1) for v in value]
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return capped(str(value), limit)
        return {bounded(k, limit, depth + 1) if isinstance(k, str) else k: bounded(v, limit, depth + 1)
                for k, v in value.items()}
    return value


_SCALARS = (int, float, bool, type(None))


def safe(text: object, limit: int = MAX_TEXT) -> str:
    """Capped, then escaped: what a terminal line may show of a peer's string."""
    return shown(capped(text if isinstance(text, str) else str(text), limit))
