"""What the commands print and write the same way: the report's counts, JSON files."""
from __future__ import annotations

from typing import Any, Mapping

import orjson
from rich.table import Table

from processor.replay import REPORT_KEYS


def counts_table(title: str, report: Mapping[str, int]) -> Table:
    """The report's counts as the first rows of a two-column summary; callers add their own rows."""
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for name in REPORT_KEYS:
        summary.add_row(name.replace("_", " "), f"{report[name]:,}")
    return summary


def write_json(path: str, data: Any) -> None:
    with open(path, "wb") as out:
        out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
