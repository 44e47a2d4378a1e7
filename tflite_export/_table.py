"""Plain-text tables for reports and the command line."""

from __future__ import annotations


def format_table(header, rows):
    """Formats rows as an aligned text table.

    Args:
        header: list of column titles.
        rows: list of rows, each a list of values (converted with `str`).

    Returns:
        The table as one string (no trailing newline).

    Example:
    >>> print(format_table(["a", "b"], [[1, 2]]))
    a  b
    -  -
    1  2
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        out = []
        for i, c in enumerate(r):
            numeric = c.replace(",", "").replace(".", "").replace("x", "").replace(
                "%", "").replace("-", "").replace("e", "").strip().isdigit()
            out.append(c.rjust(widths[i]) if numeric and i else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in cells[1:]]
    return "\n".join(lines)
