"""The fault suite's table (issue 13): one row per scenario, printed at the end of the run and
written to $EFAJOB_FAULT_TABLE when set (docs/reliability.md has a copy).

Each scenario records its row *before* it asserts, so a failing scenario still shows its
numbers; the assertions then demand 0 records lost, 0 wrong byte counts, 0 hook non-zero
exits and 0 head-node commands that hung or crashed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

COLUMNS = ("scenario", "faults injected", "jobs", "records expected", "found",
           "bytes exact / flagged / wrong", "hook non-zero", "head-node hung / crashed")


@dataclass
class Row:
    scenario: str
    faults: str
    jobs: int
    expected: int
    found: int
    exact: int
    flagged: int
    wrong: int
    hook_nonzero: int
    head_hung: int = 0
    head_crashed: int = 0

    def cells(self) -> List[str]:
        return [self.scenario, self.faults, f"{self.jobs:,}", f"{self.expected:,}",
                f"{self.found:,}", f"{self.exact:,} / {self.flagged:,} / {self.wrong:,}",
                f"{self.hook_nonzero:,}", f"{self.head_hung} / {self.head_crashed}"]

    def check(self) -> None:
        assert self.found == self.expected, f"{self.scenario}: records lost"
        assert self.wrong == 0, f"{self.scenario}: byte counts wrong and not flagged"
        assert self.exact + self.flagged == self.found, f"{self.scenario}: records unaccounted"
        assert self.hook_nonzero == 0, f"{self.scenario}: a hook exited non-zero"
        assert self.head_hung == 0 and self.head_crashed == 0, \
            f"{self.scenario}: a head-node command hung or crashed"


ROWS: List[Row] = []


def record(row: Row) -> Row:
    ROWS.append(row)
    return row


def table(rows: List[Row]) -> str:
    """A Markdown table (it goes into docs/reliability.md as it is)."""
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    line = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    return "\n".join(out) + "\n"


def write_table() -> str:
    text = table(ROWS)
    path = os.environ.get("EFAJOB_FAULT_TABLE")
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text
