"""Reading the documentation's tables, for tests that hold them to the code they describe."""

from __future__ import annotations


def first_table(markdown: str, heading: str) -> list[str]:
    """The lines of the first table after the line `heading`."""
    text = "\n" + markdown
    lines = text[text.index(f"\n{heading}\n") :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip("|").split("|")]
