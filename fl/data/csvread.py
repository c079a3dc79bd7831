"""Reading a CSV file or upload (bytes) into a DataFrame, with plain-language refusals.

Public CSVs arrive as Excel files, images, semicolon or tab files, files without
a header row and files with empty header cells. Each case is recognised from the
bytes and the data, not from what pandas happens to produce, and is either
refused with one sentence the user can act on or repaired with a note saying so.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

import pandas as pd

from fl.data.csvcells import parse_dates, thousands_separators
from fl.data.errors import DataError

__all__ = ["CsvTable", "read_csv_table", "read_csv_bytes"]

SEPARATORS = (",", ";", "\t", "|", r"\s+")  # the last: columns aligned with spaces (R, Stata exports)
_SNIFF_ROWS = 1000               # rows looked at to choose the separator and decide on the header
_NUMERIC_SHARE = 0.9             # a column is numeric when this share of its values parse as numbers
_CONTROL_SHARE = 0.02            # more control characters than this and the bytes are not text

NOT_TEXT = ("This file is not a text CSV (it looks binary, like an image or a spreadsheet); "
            "export it as a comma-separated .csv file and use that one.")
EXCEL = "This is an Excel or zip file, not a CSV; in Excel use File > Save As > CSV."
_EXCEL_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1")   # .xlsx/.zip, old .xls
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF", b"\x1f\x8b")


@dataclass
class CsvTable:
    """A parsed CSV: the frame, what was repaired on the way (notes), and whether the header was missing."""

    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    header_missing: bool = False


def _read_bytes(csv_path: str | None, csv_data: bytes | None) -> bytes:
    if csv_data is None and csv_path is None:
        raise DataError("Choose a CSV file to upload (or give a CSV path) for the csv dataset.")
    if csv_data is not None:
        return csv_data
    try:
        with open(csv_path, "rb") as fh:  # type: ignore[arg-type]
            return fh.read()
    except OSError as exc:
        raise DataError(f"Cannot read the CSV file {csv_path!r} ({exc.strerror}); check the path.") from None


def _decode(data: bytes) -> str:
    """Text of the file, refusing what is not text: Excel, images, anything with many control characters."""
    if data.startswith(_EXCEL_MAGIC):
        raise DataError(EXCEL)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export is UTF-16
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(NOT_TEXT) from None
    if data.startswith(_BINARY_MAGIC) or b"\x00" in data[:65536]:
        raise DataError(NOT_TEXT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    sample = data[:65536].decode("latin-1")
    controls = sum(1 for ch in sample if (ch < " " and ch not in "\t\r\n") or ch == "\x7f")
    if controls > _CONTROL_SHARE * len(sample):
        raise DataError(NOT_TEXT)
    try:
        return data.decode("cp1252")  # Windows exports; latin-1 when cp1252 leaves a byte undefined
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _parse(text: str, sep: str, **kwargs) -> pd.DataFrame:
    """pd.read_csv whose failures become one plain sentence."""
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError("The CSV file is empty; upload a file with a header row and data rows.") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if fields:
            want, line, saw = fields.groups()
            raise DataError(f"Line {line} of the CSV has {saw} values but the lines before it have {want}; "
                            "fix that line (often a separator inside a value that needs quotes).") from None
        if "EOF inside string" in str(exc):
            raise DataError('The CSV file cannot be parsed because a quote (") is opened and never closed; '
                            "close or remove that quote.") from None
        raise DataError("The CSV file cannot be parsed; check that every line has the same number of "
                        "separated values and that quotes are closed.") from None


def _choose_separator(text: str) -> tuple[str, pd.DataFrame]:
    """Comma unless it gives one column (or fails) and a semicolon or tab gives more; returns the raw cells."""
    comma_error: DataError | None = None
    best: tuple[str, pd.DataFrame] | None = None
    for sep in SEPARATORS:
        try:
            raw = _parse(text, sep, header=None, dtype=str, nrows=_SNIFF_ROWS + 1)
        except DataError as exc:
            comma_error = exc if sep == "," else comma_error
            continue
        if sep == "," and raw.shape[1] > 1:
            return sep, raw
        if best is None or raw.shape[1] > best[1].shape[1]:
            best = (sep, raw)
    if best is None or (best[1].shape[1] == 1 and comma_error is not None):
        raise comma_error  # type: ignore[misc]
    return best


def _is_number(cell: str) -> bool:
    return bool(pd.notna(pd.to_numeric(pd.Series([cell]), errors="coerce")[0]))


def _header_missing(raw: pd.DataFrame) -> bool:
    """Whether the first line holds data, judged from columns whose other values are mostly numbers.

    A number over a numeric column is evidence of data, a word over it is
    evidence of a header (so is a word over a small set of repeated words that
    does not contain it). The header is missing only with data evidence and no
    header evidence, so one numeric-looking name such as "2019" keeps the header.
    """
    data_evidence = header_evidence = 0
    for j in range(raw.shape[1]):
        cell = raw.iat[0, j]
        values = raw.iloc[1:, j].dropna().str.strip()
        values = values[values != ""]
        if pd.isna(cell) or not str(cell).strip() or values.empty:
            continue
        cell = str(cell).strip()
        if pd.to_numeric(values, errors="coerce").notna().mean() >= _NUMERIC_SHARE:
            if _is_number(cell):
                data_evidence += 1
            else:
                header_evidence += 1
        elif values.nunique() <= 20 and len(values) >= 2 * values.nunique() and cell not in set(values):
            header_evidence += 1
    return data_evidence > 0 and header_evidence == 0


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _decimal_commas(df: pd.DataFrame) -> list[str]:
    """Semicolon and tab files often write 1,5 for 1.5; convert text columns that only hold such numbers."""
    converted = []
    for col in df.columns:
        if pd.api.types.is_numeric_dtype(df[col]):
            continue
        values = df[col].dropna().astype(str).str.strip()
        if len(values) and values.str.fullmatch(r"[+-]?\d*,?\d+").all() and values.str.contains(",").any():
            df[col] = pd.to_numeric(df[col].astype(object).map(
                lambda v: v if pd.isna(v) else str(v).strip().replace(",", ".")))
            converted.append(f"'{col}'")
    return [f"read the decimal commas in {_and(converted)} as decimal points"] if converted else []


def read_csv_table(csv_path: str | None, csv_data: bytes | None) -> CsvTable:
    """Parse a CSV file or upload into a frame plus notes; every failure becomes one DataError sentence."""
    data = _read_bytes(csv_path, csv_data)
    if not data.strip():
        raise DataError("The CSV file is empty; upload a file with a header row and data rows.")
    text = _decode(data)
    sep, raw = _choose_separator(text)
    notes: list[str] = []
    missing = _header_missing(raw)
    if missing:
        names = [f"column_{j + 1}" for j in range(raw.shape[1])]
        df = _parse(text, sep, header=None, names=names)
        first = ["" if pd.isna(v) else str(v).strip() for v in raw.iloc[0].tolist()]
        shown = first[:3] + (["…"] if len(first) > 3 else [])
        notes.append(f"The file has no header row (its first line holds data: {', '.join(shown)}), so its columns "
                     f"are named column_1 … column_{raw.shape[1]}; add a header row to use your own names.")
        unnamed = list(range(raw.shape[1]))
    else:
        df = _parse(text, sep)  # rows longer than the first line were refused while sniffing
        unnamed = [j for j in range(raw.shape[1]) if pd.isna(raw.iat[0, j]) or not str(raw.iat[0, j]).strip()]
        df.columns = [f"column_{j + 1}" if j in unnamed else str(c).strip() for j, c in enumerate(df.columns)]
    empty = [df.columns[j] for j in unnamed if df.iloc[:, j].isna().all()]
    if empty:
        df = df.drop(columns=empty)
        notes.append(f"dropped {len(empty)} empty column(s) without a name (the lines probably end with a separator)")
    quoted = [c for c in df.columns if len(c) > 1 and c[0] == c[-1] and c[0] in "'\""]
    if quoted:  # 'OBS' 'GPA': single quotes the parser does not treat as quotes
        df.columns = [c[1:-1] if c in quoted else c for c in df.columns]
    if not missing and len(unnamed) > len(empty):
        named = [f"column_{j + 1}" for j in unnamed if f"column_{j + 1}" in df.columns]
        which = _and([n.split("_")[1] for n in named])
        notes.append(f"Column{'s' if len(named) > 1 else ''} {which} {'have' if len(named) > 1 else 'has'} "
                     f"no name in the header row, so {'they are' if len(named) > 1 else 'it is'} called "
                     f"{_and(named)}; add names to the header row to use your own.")
    if sep != ",":
        notes += _decimal_commas(df)
    notes += thousands_separators(df, sep)
    date_notes, dates = parse_dates(df)
    notes += date_notes
    if df.shape[1] == 1:
        raise DataError(f"The CSV has only one column ({df.columns[0]!r}); a dataset needs a label column and at "
                        "least one feature column. If the values are separated by something other than commas, "
                        "semicolons, tabs, bars or spaces, save the file as comma-separated.")
    if df.columns.duplicated().any():
        raise DataError("The CSV has repeated column names; give every column a distinct name.")
    if len(df) == 0:
        raise DataError("The CSV file has a header but no data rows; upload a file with data.")
    df.attrs["csv_notes"] = list(notes)
    df.attrs["header_missing"] = missing
    df.attrs["date_columns"] = dates  # days since 1970: a daily series is not a row number (fl.data.columns)
    return CsvTable(df, notes, missing)


def read_csv_bytes(csv_path: str | None, csv_data: bytes | None) -> pd.DataFrame:
    """The frame of read_csv_table; its notes ride along in ``frame.attrs`` for describe_csv."""
    return read_csv_table(csv_path, csv_data).frame
