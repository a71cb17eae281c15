"""Text that comes from users and runs (folder names, labels, values in results.json such as
`data.aet_subset.strategy`) as the report, the model card, the data cards and the CSV files show it: literally,
never as markup or formulas of their own."""

from __future__ import annotations

import re

# A line break in a value would end a table row or start a heading; every control character becomes a space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What starts Markdown or HTML inside a line: backslash escapes, code, emphasis, links and images, table cells,
# entities, strikethrough, math, and `<` before a tag, comment or autolink (`p < 0.05` stays as it is). `_` is
# left alone: ordinary values are full of it (`speech_music`) and, inside words, it never emphasises.
_MARKUP = re.compile(r"[\\`*\[\]|&~$]|<(?=\S)")


def markdown_text(value) -> str:
    """`value` for a Markdown line or table cell: control characters as spaces, markup characters escaped."""
    return _MARKUP.sub(lambda found: "\\" + found[0], _CONTROL.sub(" ", str(value)))


def plot_text(value) -> str:
    """`value` for a matplotlib label: a `$` would start mathtext, and malformed math stops the figure from drawing."""
    return str(value).replace("$", r"\$")


def code_span(value) -> str:
    """`value` as an inline code span, shown literally (HTML and links too): its fence is one backtick longer than the
    longest run of backticks inside, and it is padded where CommonMark would otherwise strip or merge an edge."""
    text = _CONTROL.sub(" ", str(value))
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == text[-1:] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """`value` for a CSV cell a person may open in a spreadsheet: text that would start a formula gets a leading
    `'` (shown, never run); numbers, and text that starts otherwise, are written as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value
