"""The README and docs/ say only what exists: every `mlebench ...` command line they show names
a real command and real options, the methods table lists the paper's methods, and the figures
quoted from the example report are the report's."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import click
import pytest

from mlebench.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _command_lines(text: str) -> list[str]:
    """``mlebench ...`` lines inside fenced code blocks, comments and continuations handled."""
    lines, inside, pending = [], False, ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        line = pending + raw.split(" #")[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        for part in re.split(r"\s*(?:\||&&|;)\s*", line):
            part = re.sub(r"^torchrun .*?-m mlebench", "mlebench", part)
            if part.startswith("mlebench "):
                lines.append(part)
    return lines


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = main
    while isinstance(command, click.Group) and words:
        default = getattr(command, "default_command", None)  # `sweep GRID` is `sweep submit GRID`
        if default and command.get_command(click.Context(command), words[0]) is None:
            words = [default, *words]
        if words[0].startswith("-"):
            break
        sub = command.get_command(click.Context(command), words[0])  # plugins' commands too
        if sub is None:
            raise AssertionError(f"no command {words[0]!r} under {command.name!r}")
        command, words = sub, words[1:]
    return command, words


CASES = [(doc.name, line) for doc in DOCS for line in _command_lines(doc.read_text())]


def test_the_docs_show_commands():
    assert len(CASES) > 20


@pytest.mark.parametrize("doc,line", CASES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(CASES)])
def test_every_command_line_in_the_docs_is_real(doc: str, line: str):
    words = shlex.split(line.replace("...", ""))[1:]
    command, rest = _resolve(words)
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
            flag = word.split("=")[0]
            assert flag in known, f"{doc}: `{line}`: {command.name} has no option {flag}"


def test_the_readme_lists_the_paper_methods():
    readme = (ROOT / "README.md").read_text()
    for name in ("mlesam", "sam-lora", "cwsam", "cmnext"):
        assert f"| `{name}` |" in readme, name
    assert "not implemented" not in readme


def _markdown_rows(text: str, heading: str) -> dict[str, dict[str, str]]:
    """Rows of the first Markdown table after the line starting with ``heading``: {first cell: {column: cell}}."""
    lines = text[text.index(heading):].splitlines()
    table = [ln for ln in itertools.takewhile(lambda ln: ln.startswith("|") or not ln.strip(),
                                              itertools.dropwhile(lambda ln: not ln.startswith("|"), lines))
             if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def _number(cell: str) -> float:
    return float(re.search(r"-?\d+\.\d+", cell).group())


def test_the_four_method_table_quotes_the_example_report():
    """docs/benchmark.md's table of the four methods must be the example report's numbers."""
    report = (ROOT / "reports" / "example" / "tables.md").read_text()
    measured = _markdown_rows(report, "### mIoU (%) of one model per training combination")
    quoted = _markdown_rows((ROOT / "docs" / "benchmark.md").read_text(), "| method | R-D-E-L mIoU")
    assert set(quoted) == {"mlesam", "sam-lora", "cwsam", "cmnext"}
    for method, row in quoted.items():
        source = measured[f"{method} / R-D-E-L"]
        assert _number(row["R-D-E-L mIoU"]) == _number(source["R-D-E-L"]), method
        assert _number(row["RGB mIoU"]) == _number(source["R"]), method
        assert _number(row["mIoU^Avg (15 subsets)"]) == _number(source["Mean"]), method
