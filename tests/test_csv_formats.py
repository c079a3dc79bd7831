"""CSV files as people write them: separators, decimal commas, encodings, dates, thousands separators.

Each format is read, then described (the report the Run page shows), and the
values are checked: a number column must come out as the numbers the file
means, not as text that would be one-hot encoded or dropped.
"""

from __future__ import annotations

import pytest

from fl.data import describe_csv, load_dataset, read_csv_table


def _kinds(report) -> dict[str, str]:
    return {c["column"]: c["kind"] for c in report.columns}


def test_semicolon_separated_file():
    # Prepare
    data = b"height;weight;label\n170;65;a\n180;80;b\n165;55;a\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["height"].tolist() == [170, 180, 165] and table.frame["weight"].tolist() == [65, 80, 55]
    assert _kinds(report) == {"height": "numeric", "weight": "numeric", "label": "target"}
    assert report.feature_names == ["height", "weight"] and report.problems == []


def test_tab_separated_file():
    # Prepare
    data = b"height\tweight\tlabel\n170\t65\ta\n180\t80\tb\n165\t55\ta\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert list(table.frame.columns) == ["height", "weight", "label"]
    assert table.frame["weight"].tolist() == [65, 80, 55]
    assert report.feature_names == ["height", "weight"] and report.class_counts == {"a": 2, "b": 1}


def test_decimal_commas_in_a_semicolon_file():
    # Prepare
    data = b"a;b;label\n1,5;2,25;x\n3,0;4,5;y\n5,75;6;x\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["a"].tolist() == [1.5, 3.0, 5.75] and table.frame["b"].tolist() == [2.25, 4.5, 6.0]
    assert "read the decimal commas in 'a' and 'b' as decimal points" in report.notes
    assert _kinds(report)["a"] == _kinds(report)["b"] == "numeric"


def test_latin1_file_with_accented_text():
    # Prepare: Windows/latin-1 bytes (é = 0xE9), not valid UTF-8
    text = "ville;température;label\nBéziers;12,5;sud\nNîmes;14;sud\nLille;9,5;nord\nCaen;10;nord\n"
    data = text.encode("latin-1")

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert list(table.frame.columns) == ["ville", "température", "label"]
    assert table.frame["ville"].tolist() == ["Béziers", "Nîmes", "Lille", "Caen"]
    assert table.frame["température"].tolist() == [12.5, 14.0, 9.5, 10.0]
    assert report.feature_names == ["ville=Béziers", "ville=Caen", "ville=Lille", "ville=Nîmes", "température"]


def test_iso_dates_become_days_since_1970():
    # Prepare
    data = b"day,v,label\n2024-01-31,1,x\n2024-02-01,2,y\n,3,x\n1970-01-02,4,y\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert: a missing date is a missing number, median-filled like any other
    assert table.frame["day"].tolist()[:2] == [19753.0, 19754.0] and table.frame["day"].tolist()[3] == 1.0
    assert table.frame["day"].isna().tolist() == [False, False, True, False]
    assert ("read 'day' as dates (year-month-day) and turned them into days since 1970-01-01 "
            "(2024-01-31 = 19753)") in report.notes
    assert _kinds(report)["day"] == "numeric" and "day" in report.feature_names


def test_day_month_year_dates():
    # Prepare
    data = b"day;v;label\n31/01/2024;1;x\n01/02/2024;2;y\n15/03/2024;3;x\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["day"].tolist() == [19753.0, 19754.0, 19797.0]
    assert any(n.startswith("read 'day' as dates (day/month/year)") for n in report.notes)


def test_ambiguous_dates_are_read_day_first_and_the_note_says_so():
    # Prepare: every day is 12 or less, so month/day/year would read them too
    data = b"day,v,label\n01/02/2024,1,x\n03/04/2024,2,y\n05/06/2024,3,x\n"

    # Execute
    report = describe_csv(read_csv_table(None, data), "label")

    # Assert
    assert any("(day/month/year; they also read as month/day/year, so check the order)" in n for n in report.notes)


def test_dates_with_times_keep_the_time_of_day():
    # Prepare
    data = b"when,v,label\n2024-01-31 12:00,1,x\n2024-01-31T18:00:00,2,y\n2024-02-01 00:00:00,3,x\n"

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["when"].tolist() == [19753.5, 19753.75, 19754.0]
    assert _kinds(report)["when"] == "numeric"


def test_quoted_numbers_with_thousands_separators():
    # Prepare
    data = b'income,age,label\n"1,234.5",30,x\n"12,000",40,y\n7.5,50,x\n"-2,500,000",60,y\n'

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["income"].tolist() == [1234.5, 12000.0, 7.5, -2500000.0]
    assert "read the numbers with thousands separators in 'income' as numbers (1,234.5 = 1234.5)" in report.notes
    assert _kinds(report)["income"] == "numeric"


@pytest.mark.parametrize("cells,expected", [
    (('"1.234,5"', '"12.000"', "7,5"), [1234.5, 12000.0, 7.5]),       # dots group, comma is the decimal point
    (("1 234,5", "12\u00a0000", "7,5"), [1234.5, 12000.0, 7.5]),       # spaces (and no-break spaces) group
])
def test_european_thousands_separators_in_a_semicolon_file(cells, expected):
    # Prepare
    data = ("amount;age;label\n" + "".join(f"{c};{30 + i};{'xy'[i % 2]}\n" for i, c in enumerate(cells))).encode()

    # Execute
    table = read_csv_table(None, data)
    report = describe_csv(table, "label")

    # Assert
    assert table.frame["amount"].tolist() == expected
    assert _kinds(report)["amount"] == "numeric"


def test_text_that_only_looks_like_numbers_or_dates_stays_text():
    # Prepare: version numbers, a code with a comma, a date with a stray word
    data = b'version,code,when,label\n1.2.3,"1,5",2024-01-31,x\n1.2.4,"2,50",soon,y\n1.3.0,"3,7",2024-02-01,x\n'

    # Execute
    table = read_csv_table(None, data)

    # Assert
    assert table.frame["version"].tolist() == ["1.2.3", "1.2.4", "1.3.0"]
    assert table.frame["code"].tolist() == ["1,5", "2,50", "3,7"]
    assert table.frame["when"].tolist() == ["2024-01-31", "soon", "2024-02-01"]
    assert table.notes == []


def test_a_daily_series_is_not_mistaken_for_a_row_number():
    # Prepare: 30 consecutive days, unique and evenly spaced like a row number, but dates
    rows = "".join(f"2024-01-{d:02d},{d % 3},{'ab'[d % 2]}\n" for d in range(1, 31))

    # Execute
    ds = load_dataset("csv", csv_data=("day,v,label\n" + rows).encode(), target="label")

    # Assert
    assert ds.feature_names == ["day", "v"]
    assert ds.X[0, 0] == 19723.0  # 2024-01-01
