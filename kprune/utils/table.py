"""Plain-text tables for reports and the command line (the one table printer of kprune)."""

from __future__ import annotations


def format_table(header, rows, footer=None):
    """Formats rows as an aligned text table.

    Numeric-looking cells (digits with `,` `.` `%` `x` `-` `e`) are
    right-aligned, except in the first column.

    Args:
        header: list of column titles.
        rows: list of rows, each a list of values (converted with `str`).
        footer: optional list of rows printed below a second rule (totals).

    Returns:
        The table as one string (no trailing newline).

    Example:
    >>> print(format_table(["a", "b"], [[1, 2]]))
    a  b
    -  -
    1  2
    """
    footer = list(footer or [])
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in list(rows) + footer]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        out = []
        for i, c in enumerate(r):
            numeric = c.replace(",", "").replace(".", "").replace("x", "").replace(
                "%", "").replace("-", "").replace("e", "").strip().isdigit()
            out.append(c.rjust(widths[i]) if numeric and i else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = cells[1:len(cells) - len(footer)]
    lines = [line(cells[0]), rule] + [line(r) for r in body]
    if footer:
        lines += [rule] + [line(r) for r in cells[len(cells) - len(footer):]]
    return "\n".join(lines)
