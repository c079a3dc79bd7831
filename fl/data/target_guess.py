"""Which column of a CSV is the label: guessed the way a person reads a table.

Tried on public tables as people publish them, the former rule (the last
complete column with 2 to 20 values, label-like names first) chose ``STORE``
instead of ``Purchase`` (ISLR's orange juice), ``type`` instead of
``outcome`` (a clinical trial with a ``site`` column) and ``sex`` instead of
``target`` (scikit-learn's diabetes table, whose target is continuous). A
person looks at the names first, then at columns that look like answers:

1. a name that says "label" (``target``, ``label``, ``class``, ``outcome``,
   ``y``, ``diagnosis``, ...), then a name of a typical thing to predict
   (``purchase``, ``churn``, ``default``, ``survived``, ``species``, ...),
   then a yes/no flag named ``is_*``/``has_*``;
2. among unnamed columns: two values (a yes/no answer, text or 0/1) before
   a few text values before a few numbers; complete before incomplete; later
   before earlier (labels tend to come last);
3. never a row number or an ID (fl/data/columns.py), nor a column the run
   splits the clients by.

When the best-named column is continuous (a measurement, a price), it is
chosen anyway with a note: the run needs classes, so the page offers to bin
it into quantile classes, and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from fl.data.columns import exclusion_reason, id_like_name
from fl.data.labels import MAX_GUESS_CLASSES, looks_continuous, text_values

LABEL_WORDS = ("target", "label", "labels", "class", "classes", "outcome", "y", "diagnosis", "response", "result")
ANSWER_WORDS = ("purchase", "purchased", "churn", "churned", "default", "defaulted", "survived", "survival",
                "species", "fraud", "spam", "disease", "died", "death", "readmitted", "approved", "subscribed",
                "sentiment", "success", "cancer", "malignant", "recurrence", "attrition", "exited", "converted")
FLAG_PREFIXES = ("is", "has", "was", "did", "will", "had")


@dataclass(frozen=True)
class TargetGuess:
    """The guessed label column (None: nothing looks like one) and, when it needs the person's eye, why."""

    column: str | None
    continuous: bool = False  # a number with many values: a run needs it binned into classes
    note: str | None = None


def _words(name: str) -> list[str]:
    """``HeartDisease_class`` -> ["heart", "disease", "class"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name).strip())
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def name_rank(name: str) -> int:
    """3: says it is the label; 2: names a typical answer; 1: a yes/no flag (is_*, has_*); 0: nothing."""
    words = _words(name)
    if not words:
        return 0
    if words[-1] in LABEL_WORDS or words[0] in ("label", "target", "class", "outcome"):
        return 3
    if words[-1] in ANSWER_WORDS or words[0] in ANSWER_WORDS:
        return 2
    if len(words) > 1 and words[0] in FLAG_PREFIXES:
        return 1
    return 0


def guess_target(df: pd.DataFrame, exclude: Iterable[str] = ()) -> str | None:
    """The column that most looks like a label (see the module docstring), or None."""
    return guess_target_column(df, exclude).column


def guess_target_column(df: pd.DataFrame, exclude: Iterable[str] = ()) -> TargetGuess:
    """The guess and, for a continuous best-named column, the note the page shows beside it."""
    skip = {str(c) for c in exclude}
    best: tuple | None = None
    chosen: TargetGuess = TargetGuess(None)
    for position, col in enumerate(df.columns):
        name = str(col)
        if name in skip or id_like_name(name):
            continue
        s = df[col]
        rank = name_rank(name)
        n_values = s.nunique(dropna=True)
        if n_values < 2:
            continue
        continuous = looks_continuous(s) or n_values > MAX_GUESS_CLASSES
        if continuous:
            if rank < 3 or pd.to_numeric(s, errors="coerce").notna().sum() < s.notna().sum():
                continue  # only a column named as the label is worth binning (text with many values is no label)
            shape = 0
        else:
            if exclusion_reason(s, name) is not None:
                continue  # a row number, an ID, a constant: never the label
            text = text_values(s)
            numeric = pd.to_numeric(s, errors="coerce").notna().sum() == s.notna().sum()
            if (text == "").any() or n_values >= len(df) / 2:
                continue
            shape = 3 if n_values == 2 else 1 if numeric else 2
        complete = not s.isna().any()
        if rank == 0 and not complete:
            continue  # an unnamed column with gaps is a feature with missing values, not the answer
        key = (rank, not continuous, shape, complete, position)
        if best is None or key > best:
            best = key
            chosen = TargetGuess(name, continuous, _continuous_note(name, n_values) if continuous else None)
    return chosen


def _continuous_note(name: str, n_values: int) -> str:
    return (f"'{name}' looks like the label but holds {n_values} different numbers (a measurement, not classes): "
            "to train a classifier on it, turn it into quantile classes below, or choose another column.")
