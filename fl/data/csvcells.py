"""Cells as people write them: numbers with thousands separators and dates, turned into numbers with a note.

A spreadsheet export writes "1,234.5" (or "1.234,5" and "1 234,5" in a
semicolon file) and dates as 2024-01-31, 31/01/2024 or 2024-01-31 10:30.
Read as text, such a column would be one-hot encoded or dropped and its
information lost, so a text column whose every value has one of these forms
becomes a number column: the number itself, or for dates the days since
1970-01-01 (a fraction for the time of day), which keeps their order and
their distances (a model sees "later" and "how much later"). Anything else
stays text. The server and every client read cells with these same rules.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["thousands_separators", "parse_dates", "DATE_ORIGIN"]

DATE_ORIGIN = pd.Timestamp("1970-01-01")
_SAMPLE = 1000  # values looked at before a whole column is tried

_EN = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"          # 1,234.5
_EU = r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?"          # 1.234,5
_SPACED = r"[+-]?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?"  # 1 234,5 (French exports, also no-break spaces)

# (format of the date part, how the note says it); the first that reads every value wins
_DATE_FORMATS = (("%Y-%m-%d", "year-month-day"), ("%Y/%m/%d", "year/month/day"), ("%d/%m/%Y", "day/month/year"),
                 ("%m/%d/%Y", "month/day/year"), ("%d.%m.%Y", "day.month.year"), ("%d-%m-%Y", "day-month-year"),
                 ("%d/%m/%y", "day/month/year"), ("%m/%d/%y", "month/day/year"), ("%d.%m.%y", "day.month.year"))
_TIMES = ("", " %H:%M", " %H:%M:%S", " %H:%M:%S.%f", "T%H:%M", "T%H:%M:%S", "T%H:%M:%S.%f")
# a year of 4 digits first or last, or d/m/yy; then an optional time
_DATE_SHAPE = (r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))"
               r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?")


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _text_cells(df: pd.DataFrame, col: str) -> pd.Series | None:
    """The stripped non-missing cells of a text column, or None for a number column or an empty one."""
    s = df[col]
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return None
    values = s.dropna().astype(str).str.strip()
    values = values[values != ""]
    return values if len(values) else None


def _all_match(values: pd.Series, pattern: str) -> bool:
    return bool(values.head(_SAMPLE).str.fullmatch(pattern).all()) and bool(values.str.fullmatch(pattern).all())


def _to_numbers(s: pd.Series, drop: str, decimal: str) -> pd.Series:
    def one(v: object) -> object:
        if pd.isna(v) or not str(v).strip():
            return None
        text = str(v).strip()
        for ch in drop:
            text = text.replace(ch, "")
        return text.replace(decimal, ".")
    return pd.to_numeric(s.astype(object).map(one), errors="coerce").astype("float64")


def thousands_separators(df: pd.DataFrame, sep: str) -> list[str]:
    """Text columns of numbers written with thousands separators become numbers (in place); the note.

    In a comma-separated file only 1,234.5 (quoted) is read so; in a file
    separated otherwise, where a comma is a decimal point, 1.234,5 and
    1 234,5 are too, and 1,234.5 when a value shows both marks that way.
    """
    converted: list[str] = []
    example = ""
    for col in df.columns:
        values = _text_cells(df, col)
        if values is None:
            continue
        first = values.iloc[0]
        if sep != "," and _all_match(values, f"(?:{_EU}|{_SPACED})"):
            df[col] = _to_numbers(df[col], ". \u00a0\u202f", ",")
        elif _all_match(values, _EN) and (sep == "," or values.str.contains(r"\.").any()):
            df[col] = _to_numbers(df[col], ",", ".")
        else:
            continue
        converted.append(f"'{col}'")
        example = example or f" ({first} = {df.loc[values.index[0], col]:g})"
    return [f"read the numbers with thousands separators in {_and(converted)} as numbers{example}"] if converted else []


def _read_dates(values: pd.Series, date_format: str) -> pd.Series | None:
    """Every value as a timestamp in this date order (any of the time forms), or None when one does not fit."""
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    for time in _TIMES:
        missing = out.isna()
        if not missing.any():
            break
        out[missing] = pd.to_datetime(values[missing], format=date_format + time, errors="coerce")
    return None if out.isna().any() else out


def _date_order(values: pd.Series) -> tuple[str, str, list[str]] | None:
    """The first date format that reads every value, its name, and the other orders that would too."""
    for i, (fmt, name) in enumerate(_DATE_FORMATS):
        if _read_dates(values.head(_SAMPLE), fmt) is None:
            continue
        others = [n for f, n in _DATE_FORMATS[i + 1:] if n != name and _read_dates(values.head(_SAMPLE), f) is not None]
        return fmt, name, list(dict.fromkeys(others))
    return None


def parse_dates(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Text columns of dates become days since 1970-01-01 (in place); the notes and the columns converted.

    The date order is the first of _DATE_FORMATS that reads every value
    (year-month-day first, then day/month/year before month/day/year); when
    another order reads them all too, the note says which was chosen.
    """
    notes: list[str] = []
    converted: list[str] = []
    for col in df.columns:
        values = _text_cells(df, col)
        if values is None or not _all_match(values, _DATE_SHAPE):
            continue
        found = _date_order(values)
        stamps = _read_dates(values, found[0]) if found else None
        if found is None or stamps is None:
            continue
        fmt, name, others = found
        days = (stamps - DATE_ORIGIN) / pd.Timedelta(days=1)
        df[col] = pd.Series(days, index=values.index).reindex(df.index).astype("float64")
        example = values.iloc[0]
        ambiguous = f"; they also read as {_and(others)}, so check the order" if others else ""
        notes.append(f"read '{col}' as dates ({name}{ambiguous}) and turned them into days since 1970-01-01 "
                     f"({example} = {days.iloc[0]:g})")
        converted.append(str(col))
    return notes, converted
