"""Every benchmark figure the README quotes is a number in a committed results file.

The README marks each benchmark table, and each paragraph or status-table row quoting benchmark figures, with an
HTML comment on the line before it: ``<!-- results: FILE.json [FILE2.json ...] -->`` (files under
``Testing/Benchmarks/results/``). The marked block is the contiguous ``|`` lines after the marker when it is a
table, otherwise the text up to the next blank line. A row of a table that is not all figures (a status row) carries
the comment inside the row instead, since a line between two rows would end the table: that row alone is the block.
Every number in the block outside backticks must equal, at the precision it is printed with, some number in the
cited files: their numeric leaves and the numbers inside their text leaves. Numbers are compared without their sign
(``+0.472`` is a difference of 0.472); a percentage (``31%``, ``0.2–1.3%``) also matches a fraction (0.31); a
version (``2.13.0``) matches the same text. Numbers that are part of a name (``bf16``, ``avx512``, ``3D``, ``H100``)
and exponents (``64^3``) are not figures and are skipped.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "Testing" / "Benchmarks" / "results"
MARKER = re.compile(r"^\s*<!--\s*results:\s*(?P<files>[^>]*?)\s*-->\s*$")
ROW_MARKER = re.compile(r"<!--\s*results:\s*(?P<files>[^>]*?)\s*-->")
BENCHMARKS_HEADING = "## Benchmarks"

#: A number as printed: a version (two dots or more), a number in scientific notation, a number with thousands
#: separators, or a plain number; not preceded by a letter, digit, dot or caret (a name such as ``bf16``, an exponent
#: such as ``64^3``) except the ``x`` of a size (``512x512x300``), and not followed by a letter other than ``x``
#: (``3D``, ``1st``) or by more digits.
NUMBER = re.compile(
    r"(?:(?<![\w.^])|(?<=\dx)|(?<=\d×))"
    r"(?P<number>\d+(?:\.\d+){2,}|\d+(?:\.\d+)?[eE][-+]?\d+|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?![\d.]\d|[A-Za-wyz_]|,\d{3}(?!\d))"
)
#: What makes a number a percentage: ``%`` after it, or after the second number of the range it opens.
PERCENT_AFTER = re.compile(r"\s?%|\s?[-–]\s?[\d.,]+\s?%")
BACKTICKS = re.compile(r"`[^`]*`")


@dataclass(frozen=True)
class Figure:
    """One number printed in the README: its text, value, decimals printed and whether it is a percentage."""

    text: str
    value: float
    decimals: int
    percent: bool

    @property
    def is_version(self) -> bool:
        return self.text.count(".") >= 2


def figures_in(text: str) -> list[Figure]:
    """The numbers printed in ``text``, backticked spans left out."""
    text = BACKTICKS.sub(lambda match: " " * len(match.group()), text)
    found = []
    for match in NUMBER.finditer(text):
        printed = match.group("number")
        percent = bool(PERCENT_AFTER.match(text, match.end()))
        if printed.count(".") >= 2:
            found.append(Figure(printed, math.nan, 0, percent))
            continue
        mantissa, _, exponent = printed.replace(",", "").lower().partition("e")
        decimals = len(mantissa.partition(".")[2]) - (int(exponent) if exponent else 0)
        found.append(Figure(printed, float(printed.replace(",", "")), max(decimals, 0), percent))
    return found


@dataclass
class RecordedNumbers:
    """The numbers of some results files: their absolute values sorted, and the versions in their text."""

    values: list[float]
    versions: set[str]

    @classmethod
    def of(cls, documents: list[Any]) -> RecordedNumbers:
        values: list[float] = []
        versions: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, bool) or node is None:
                return
            if isinstance(node, (int, float)):
                if math.isfinite(node):
                    values.append(abs(float(node)))
            elif isinstance(node, str):
                for figure in figures_in(node):
                    if figure.is_version:
                        versions.add(figure.text)
                    else:
                        values.append(figure.value)
            elif isinstance(node, dict):
                for key, item in node.items():
                    walk(key)
                    walk(item)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        for document in documents:
            walk(document)
        return cls(sorted(values), versions)

    def matches(self, figure: Figure) -> bool:
        """Whether ``figure`` is one of these numbers rounded to its printed decimals (or, a percentage, one of these
        fractions times 100)."""
        if figure.is_version:
            return figure.text in self.versions
        candidates = [(figure.value, figure.decimals)]
        if figure.percent:
            candidates.append((figure.value / 100, figure.decimals + 2))
        for value, decimals in candidates:
            half = 0.5 * 10.0**-decimals * (1 + 1e-9) + 1e-12
            at = bisect.bisect_left(self.values, value - half)
            if at < len(self.values) and self.values[at] <= value + half:
                return True
        return False


@dataclass(frozen=True)
class Block:
    """A marked block of the README: the marker's line (1-based), the cited files, and the block's lines."""

    marker_line: int
    files: tuple[str, ...]
    lines: tuple[tuple[int, str], ...]


def marked_blocks(text: str) -> list[Block]:
    """The blocks of ``text`` that a results marker precedes, and the table rows that hold one."""
    lines = text.splitlines()
    blocks = []
    for index, line in enumerate(lines):
        marker = MARKER.match(line)
        row_marker = ROW_MARKER.search(line) if line.lstrip().startswith("|") else None
        if row_marker is not None:
            row = line[: row_marker.start()] + line[row_marker.end() :]
            blocks.append(Block(index + 1, tuple(row_marker.group("files").split()), ((index + 1, row),)))
            continue
        if marker is None:
            continue
        is_table = index + 1 < len(lines) and lines[index + 1].lstrip().startswith("|")
        body = []
        for number in range(index + 1, len(lines)):
            if (is_table and not lines[number].lstrip().startswith("|")) or not lines[number].strip():
                break
            body.append((number + 1, lines[number]))
        blocks.append(Block(index + 1, tuple(marker.group("files").split()), tuple(body)))
    return blocks


def unmarked_benchmark_tables(text: str) -> list[int]:
    """The first lines (1-based) of the Markdown tables under the ``## Benchmarks`` heading that no marker precedes."""
    lines = text.splitlines()
    inside, missing = False, []
    for index, line in enumerate(lines):
        if line.startswith("## "):
            inside = line.strip() == BENCHMARKS_HEADING
        starts_table = line.lstrip().startswith("|") and not lines[index - 1].lstrip().startswith("|")
        if inside and starts_table and not MARKER.match(lines[index - 1]):
            missing.append(index + 1)
    return missing


def unmatched(block: Block, recorded: RecordedNumbers) -> list[str]:
    """``line N: NUMBER`` for each number of ``block`` that no recorded number matches."""
    return [f"line {number}: {figure.text}{'%' if figure.percent else ''}"
            for number, line in block.lines for figure in figures_in(line) if not recorded.matches(figure)]  # fmt: skip


def load_results(files: tuple[str, ...]) -> list[Any]:
    """The cited files, parsed; a missing or unparsable one fails the test, named."""
    documents = []
    for name in files:
        path = RESULTS / name
        assert path.is_file(), f"{name} is cited by the README but is not in {RESULTS.relative_to(ROOT)}"
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            pytest.fail(f"{name}: not JSON ({error})")
    return documents


# ----- the README --------------------------------------------------------------------------------------------------

BLOCKS = marked_blocks(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README line {block.marker_line}" for block in BLOCKS])
def test_marked_block_figures_are_recorded(block: Block) -> None:
    assert block.files, f"README line {block.marker_line}: the marker cites no results file"
    assert block.lines, f"README line {block.marker_line}: the marker is followed by no block"
    missing = unmatched(block, RecordedNumbers.of(load_results(block.files)))
    assert not missing, (f"README line {block.marker_line}: numbers in no cited file "
                         f"({', '.join(block.files)}):\n" + "\n".join(missing))  # fmt: skip


def test_every_benchmark_table_is_marked() -> None:
    missing = unmarked_benchmark_tables(README.read_text(encoding="utf-8"))
    assert not missing, "tables under '## Benchmarks' without a '<!-- results: FILE.json -->' marker, at README " \
        f"lines {', '.join(map(str, missing))}"  # fmt: skip


# ----- the matcher ---------------------------------------------------------------------------------------------------


def recorded(*documents: Any) -> RecordedNumbers:
    return RecordedNumbers.of(list(documents))


def test_figures_are_read_with_their_precision() -> None:
    figures = figures_in("0.852 / 1137 steps, 3.06x, 2,061 of 20,920, `0.5` skipped, bf16 avx512 3D H100, 64^3")
    assert [(f.text, f.value, f.decimals) for f in figures] == [
        ("0.852", 0.852, 3), ("1137", 1137.0, 0), ("3.06", 3.06, 2), ("2,061", 2061.0, 0), ("20,920", 20920.0, 0),
        ("64", 64.0, 0)]  # fmt: skip


def test_sizes_ranges_percentages_and_versions() -> None:
    assert [f.value for f in figures_in("512x512x300 and 96×96")] == [512, 512, 300, 96, 96]
    assert [(f.value, f.percent) for f in figures_in("0.2–1.3% and 99.985-99.99 % but 1.27-1.50x")] == [
        (0.2, True), (1.3, True), (99.985, True), (99.99, True), (1.27, False), (1.50, False)]  # fmt: skip
    assert [(f.text, f.is_version) for f in figures_in("torch 2.13.0 CPU, 6.8e-6")] == [
        ("2.13.0", True), ("6.8e-6", False)]  # fmt: skip


def test_a_number_matches_at_its_printed_precision() -> None:
    numbers = recorded({"dice": 0.85249, "steps": 1137, "ratio": 3.0648, "pair": [2061, -0.4721]})
    block = Block(1, ("x.json",), ((2, "| 0.852 | 1137 steps | 3.06x | 2,061 | +0.472 | 0.85 |"),))
    assert unmatched(block, numbers) == []


def test_a_number_that_is_not_recorded_is_listed_with_its_line() -> None:
    numbers = recorded({"dice": 0.85249, "steps": 1137})
    block = Block(1, ("x.json",), ((7, "Dice 0.852 after 1137 steps"), (8, "Dice 0.853 after 1138 steps")))
    assert unmatched(block, numbers) == ["line 8: 0.853", "line 8: 1138"]


def test_rounding_is_to_the_printed_decimals_only() -> None:
    numbers = recorded([0.8525, 1.449])
    assert numbers.matches(figures_in("0.853")[0])  # a value half-way matches both neighbours
    assert not numbers.matches(figures_in("0.8524")[0])
    assert numbers.matches(figures_in("1.4x")[0])
    assert numbers.matches(figures_in("1.45x")[0])
    assert not numbers.matches(figures_in("1.44x")[0])
    assert not numbers.matches(figures_in("1.5x")[0])


def test_ratios_ranges_and_percentages_match_recorded_values() -> None:
    numbers = recorded({"ratios": [1.2712, 1.4981], "outside_share": [0.0021, 0.0129], "agreement": "99.985 %"})
    block = Block(1, ("x.json",), ((3, "1.27-1.50x; outside the network 0.2–1.3%; agreement 99.985 %"),))
    assert unmatched(block, numbers) == []
    block = Block(1, ("x.json",), ((3, "1.27-1.60x; 0.2–1.4%"),))
    assert unmatched(block, numbers) == ["line 3: 1.60", "line 3: 1.4%"]


def test_numbers_inside_text_leaves_and_versions_match() -> None:
    numbers = recorded({"machine": {"versions": {"torch": "2.13.0+cpu"}}, "note": "load average 4.1"})
    block = Block(1, ("x.json",), ((1, "torch 2.13.0, load 4.1, torch 2.12.0"),))
    assert unmatched(block, numbers) == ["line 1: 2.12.0"]


def test_markers_blocks_and_unmarked_tables() -> None:
    text = "\n".join([
        "## Benchmarks", "<!-- results: a.json b.json -->", "| x | y |", "| --- | --- |", "| 1 | 2 |", "after",
        "", "<!-- results: c.json -->", "A paragraph with 3.5x", "over two lines.", "", "| 4 |", "| 5 |", "",
        "## Other", "| 6 |", "| row 7 <!-- results: d.json --> |"])  # fmt: skip
    blocks = marked_blocks(text)
    assert [(b.marker_line, b.files, [n for n, _ in b.lines]) for b in blocks] == [
        (2, ("a.json", "b.json"), [3, 4, 5]), (8, ("c.json",), [9, 10]), (17, ("d.json",), [17])]  # fmt: skip
    assert [f.text for f in figures_in(blocks[2].lines[0][1])] == ["7"]
    assert unmarked_benchmark_tables(text) == [12]
