"""The loader of published numbers (``load_published``) on small temporary directories: a minimal
file loads, and a bad, missing or misplaced column, a value that is not a finite number, a wrong
field count, a duplicate key, a missing directory and a directory without table files are each
refused naming the file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlebench.errors import ConfigError
from mlebench.report.published import PUBLISHED_COLUMNS, load_published

HEADER = ",".join(PUBLISHED_COLUMNS)
GOOD = "I,mlesam,deliver,val,rgb,rgb,all,none,miou,55.23,"


def write_tables(directory: Path, **files: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.csv").write_text(text, encoding="utf-8")
    return directory


def test_load_minimal_directory(tmp_path: Path) -> None:
    frame = load_published(write_tables(tmp_path, table1=f"{HEADER}\n{GOOD}\n"))
    assert frame.value.tolist() == [55.23] and frame.note.tolist() == [""]


def test_bad_column_is_named(tmp_path: Path) -> None:
    bad = HEADER.replace("metric", "measure")
    with pytest.raises(ConfigError, match=r"table1\.csv: missing column\(s\) metric; unknown column\(s\) 'measure'"):
        load_published(write_tables(tmp_path, table1=f"{bad}\n{GOOD}\n"))


def test_missing_column_is_named(tmp_path: Path) -> None:
    short = HEADER.replace(",note", "")
    with pytest.raises(ConfigError, match=r"table2\.csv: missing column\(s\) note"):
        load_published(write_tables(tmp_path, table1=f"{HEADER}\n{GOOD}\n", table2=f"{short}\n"))


def test_columns_out_of_order(tmp_path: Path) -> None:
    swapped = HEADER.replace("split,train_modalities", "train_modalities,split")
    with pytest.raises(ConfigError, match="out of order"):
        load_published(write_tables(tmp_path, table1=f"{swapped}\n{GOOD}\n"))


@pytest.mark.parametrize("bad", ["55,23", "n/a", "", "nan", "inf"])
def test_non_numeric_value_names_file_and_line(tmp_path: Path, bad: str) -> None:
    row = GOOD.replace("55.23", f'"{bad}"')
    text = f"{HEADER}\n{GOOD.replace('rgb,rgb', 'depth,depth')}\n{row}\n"
    with pytest.raises(ConfigError, match=rf"table1\.csv, line 3: value '{re.escape(bad)}' is not a finite number"):
        load_published(write_tables(tmp_path, table1=text))


def test_wrong_field_count_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"table1\.csv, line 2: 10 fields, expected 11"):
        load_published(write_tables(tmp_path, table1=f"{HEADER}\n{GOOD[:-1]}\n"))


def test_duplicate_key_names_both_rows(tmp_path: Path) -> None:
    other = GOOD.replace("55.23,", "55.24,a note")
    directory = write_tables(tmp_path, table1=f"{HEADER}\n{GOOD}\n", table9=f"{HEADER}\n{other}\n")
    with pytest.raises(ConfigError, match=r"1 duplicate key\(s\).*\(I, mlesam, deliver, val, rgb, rgb, all, "
                                          r"none, miou\) at table1\.csv:2, table9\.csv:2"):
        load_published(directory)


def test_missing_directory_and_no_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no directory"):
        load_published(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"no table\*\.csv"):
        load_published(tmp_path)
