"""`processor bench`: the command the benchmark adds to `processor`."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import orjson
from rich.console import Console

import bench
from devstack.workdir import workdir


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="this processor side by side with the patterns in use today",
                                 description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run without the KCL daemon (< 5 min)")
    parser.add_argument("--conversations", type=int, help="storm size (default 1,000; --quick 200)")
    parser.add_argument("--curve", help="conversation counts for the growth curve, comma-separated "
                                        "(default 1000,10000,100000,1000000; --quick 1000,10000,30000)")
    parser.add_argument("--out", help="write the results as JSON here (and the chart beside it as .png)")
    parser.add_argument("--chart", help="write the PNG chart here (default: beside --out)")
    parser.add_argument("--readme", help="rewrite this README's results section (between bench markers)")
    parser.add_argument("--workdir", help="keep the storm, logs and state here (default: a temporary directory)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bench.report import chart, comparison_table, cpu_lines, markdown, ratios, update_readme
    from bench.run import Plan, bench as run_bench

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # the table is wide; logs and CI have room
    plan = Plan.for_run(args.quick, args.conversations)
    if args.curve is not None:
        plan = dataclasses.replace(plan, curve=tuple(int(n) for n in args.curve.split(",") if n.strip()))
    with workdir(args.workdir, "processor-bench-") as directory:
        results = run_bench(plan, directory, say=lambda line: console.print(line, highlight=False))
    console.print(comparison_table(results))
    console.print(ratios(results))
    for line in cpu_lines(results, lambda text: f"[bold]{text}[/bold]"):
        console.print(line)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    chart_path = args.chart or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if chart_path:
        chart(results, Path(chart_path))
    if args.readme:
        command = "processor bench" + (" --quick" if args.quick else "") + (
            f" --conversations {args.conversations}" if args.conversations else "") + (
            f" --curve {args.curve}" if args.curve is not None else "") + (
            f" --out {args.out}" if args.out else "") + f" --readme {args.readme}"
        update_readme(Path(args.readme), markdown(results, command) + (
            f"\n![benchmark chart]({chart_path})\n" if chart_path else ""))
    return 0
