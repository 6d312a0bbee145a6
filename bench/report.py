"""The benchmark's results as a terminal table, a PNG chart and the README's results section."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from rich import box
from rich.table import Table

COLUMNS = (  # (result key, heading)
    ("events_per_s", "events/s"), ("cpu_s", "CPU s"), ("events_per_cpu_s", "events/CPU-s"),
    ("ddb_requests_per_1k", "requests/1k"), ("ddb_reads_per_1k", "reads/1k"),
    ("ddb_writes_per_1k", "writes/1k"), ("wcu_per_1k", "WCU/1k"), ("leaked_duplicates", "leaked dup."),
    ("lost_updates", "lost upd."), ("stale_overwrites", "stale overw."), ("mismatches", "mismatches"),
    ("cells_wrong", "cells wrong"), ("hottest_key_writes_per_s", "hot key w/s"),
    ("hottest_key_writes_per_flush", "hot key w/flush"), ("peak_rss_mb", "peak RSS MB"))
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
#: issue 12: events per CPU-second of the system's own processes, its DynamoDB writes included
CPU_TARGETS = {"this_catchup": 15_000, "this_live": 5_000}


def shown(value: Any) -> str:
    """A measurement as the table shows it: "-" where it does not apply (None)."""
    return "-" if value is None else f"{value:,}"


def comparison_table(results: dict[str, Any]) -> Table:
    title = (f"{results['events']:,} events, {results['conversations']:,} conversations; "
             f"floor {results['floor_writes_per_1k']} writes/1k")
    if "floor_plus_aggregates_writes_per_1k" in results:
        title += f", {results['floor_plus_aggregates_writes_per_1k']} with the aggregates"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)  # no rules between columns: 160 wide fits
    table.add_column("system", no_wrap=True)
    for _, heading in COLUMNS:
        table.add_column(heading.replace(" ", "\n").replace("/1k", "\n/1k").replace("/CPU", "\n/CPU")
                         .replace("mismatches", "mis-\nmatches"), justify="right")
    for system, row in results["systems"].items():
        table.add_row(system, *(shown(row.get(key)) for key, _ in COLUMNS))
    return table


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The issue's targets, as measured side by side in this run."""
    systems = results["systems"]
    found: dict[str, float] = {}
    if "powertools" in systems:
        for ours in ("this_live", "this_catchup"):
            if ours in systems and systems[ours]["ddb_requests_per_1k"]:
                found[f"powertools_requests_over_{ours}"] = round(
                    systems["powertools"]["ddb_requests_per_1k"] / systems[ours]["ddb_requests_per_1k"], 1)
    if "check_then_write" in systems and "this_catchup" in systems:
        found["this_catchup_speed_over_check_then_write"] = round(
            systems["this_catchup"]["events_per_s"] / systems["check_then_write"]["events_per_s"], 1)
    if "this_live" in systems:
        for floor in ("floor", "floor_plus_aggregates"):
            if results.get(f"{floor}_writes_per_1k"):
                found[f"this_live_writes_over_{floor}"] = round(
                    systems["this_live"]["ddb_writes_per_1k"] / results[f"{floor}_writes_per_1k"], 2)
    return found


def cpu_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each CPU target beside the events per CPU-second measured, met or not (results from before
    CPU was measured have none)."""
    found = {}
    for system, target in CPU_TARGETS.items():
        measured = results["systems"].get(system, {}).get("events_per_cpu_s")
        if measured is not None:
            found[system] = {"events_per_cpu_s": measured, "target": target, "met": measured >= target}
    return found


def cpu_lines(results: dict[str, Any], strong: Callable[[str], str]) -> list[str]:
    """The CPU targets, this_kcl's CPU split and the compiled engine's ratio, as sentences (`strong`
    marks a number up)."""
    def number(value: Any, unit: str = "") -> str:
        return strong(shown(value) + unit)

    lines = []
    targets = cpu_targets(results)
    if targets:
        lines.append("CPU targets (events per CPU-second, writes included): " + ", ".join(
            f"{system} {number(found['events_per_cpu_s'])} (target ≥ {found['target']:,}: "
            f"{strong('met' if found['met'] else 'missed')})" for system, found in targets.items()) + ".")
    kcl = results["systems"].get("this_kcl", {})
    if "kcl_children_cpu_s" in kcl:
        lines.append(f"this_kcl's CPU: the Java daemon {number(kcl['kcl_daemon_cpu_s'], ' s')}, its Python children "
                     f"{number(kcl['kcl_children_cpu_s'], ' s')}, {number(kcl['kcl_child_us_per_record'], ' µs')} of "
                     f"the children's CPU per record they took in (their start-up and shutdown included).")
    compiled = results.get("compiled", {})
    if "ratio" in compiled:
        lines.append(f"this_live, this_catchup, this_kcl and the curve run the image's wheel, built here, as production "
                     f"does: its per-event hot path compiled ({compiled['compiled_modules']} modules, setup.py); the "
                     f"peers run as they ship. The image's engine against the checkout's sources (the dry replay, 1 "
                     f"shard, {compiled['events']:,} events, median of {compiled['rounds']} rounds side by side): "
                     f"{number(compiled['compiled_events_per_cpu_s'])} events per CPU-second against "
                     f"{number(compiled['source_events_per_cpu_s'])}, {number(compiled['ratio'], 'x')}"
                     f"; peak RSS {number(compiled['compiled_peak_rss_mb'], ' MB')} against "
                     f"{number(compiled['source_peak_rss_mb'], ' MB')}; reports {'equal' if compiled['reports_equal'] else strong('DIFFERENT')}.")
    elif "skipped" in compiled:
        lines.append(f"The compiled engine was not measured: {compiled['skipped']}.")
    return lines


def markdown(results: dict[str, Any], command: str) -> str:
    systems = results["systems"]
    floors = f"**{results['floor_writes_per_1k']} writes per 1,000 events**"
    if "floor_plus_aggregates_writes_per_1k" in results:
        floors += (f" for the conversation states, **{results['floor_plus_aggregates_writes_per_1k']}** with the "
                   f"aggregates (a write for every change of a projection or of a session, in event-time order)")
    lines = [f"Measured with `{command}` on {results['machine']}: {results['events']:,} events over "
             f"{results['conversations']:,} conversations ({results['duplicates']:,} repeats and re-emits), "
             f"every system against the same metered local DynamoDB (moto). Floor: {floors}.", "",
             "| system | " + " | ".join(heading for _, heading in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for system, row in systems.items():
        lines.append(f"| {system} | " + " | ".join(shown(row.get(key)) for key, _ in COLUMNS) + " |")
    lines += ["", "`-`: not applicable. add_per_event keeps no conversation state (no projection checks); the "
              "conversation-state peers keep no metrics (no cells). *cells wrong*: metrics cells whose sums differ "
              "from the truth's (every distinct event's conversation state, summed), or that only one side has: "
              "for ours every cell of every kind (queue and agent intervals, gauges), read back as "
              "`processor queues` reads them; for add_per_event the queue cells over the metrics it keeps. "
              "*hot key w/s*: the most writes one partition key got in one wall-clock second (the emulator's "
              "meter); this_live replays stream time much faster than real time, so each of its wall-clock "
              "seconds spans many of its 1-second flushes. *hot key w/flush*: the most writes one metrics key got within one flush "
              "of one shard (I13 bounds it to 1; measured in-process, so not for this_kcl). *CPU s*: CPU seconds (user "
              "plus system) of the system's own processes over its run, never the emulator's: the benchmark's process "
              "running it for the in-process systems, the Java daemon and its Python children for this_kcl (their "
              "whole lives, JVM start-up included); *events/CPU-s*: events over CPU s."]
    found = ratios(results)
    lines += ["", "Side-by-side ratios: " + ", ".join(f"{name.replace('_', ' ')} **{value}x**"
                                                      for name, value in found.items()) + "."]
    if "this_live" in systems and "floor_plus_aggregates_writes_per_1k" in results:
        lines += ["", f"this_live writes **{systems['this_live']['ddb_writes_per_1k']}** per 1,000 events: floor "
                      f"{results['floor_writes_per_1k']}, floor plus the aggregate writes it needs "
                      f"{results['floor_plus_aggregates_writes_per_1k']}."]
    lines += [line for sentence in cpu_lines(results, lambda text: f"**{text}**") for line in ("", sentence)]
    lines.append("")
    if results["curve"]:
        lines += ["this_catchup's engine (RocksDB, no DynamoDB) as conversations in state grow:", "",
                  "| conversations | events | events/s | peak RSS MB |", "|---:|---:|---:|---:|"]
        lines += [f"| {p['conversations']:,} | {p['events']:,} | {p['events_per_s']:,} | {p['peak_rss_mb']:,} |"
                  for p in results["curve"]]
    return "\n".join(lines) + "\n"


def update_readme(path: Path, section: str) -> None:
    """Replace the text between the README's bench markers with `section`."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path} has no {BEGIN} … {END} markers")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{section}{END}", text))


def chart(results: dict[str, Any], path: Path, image: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results["systems"])
    rows = [results["systems"][s] for s in systems]
    colors = ["#1f77b4" if s.startswith("this_") else "#999999" for s in systems]
    panels = 3 if results["curve"] else 2
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    requests = axes[0]
    requests.barh(systems, [r["ddb_requests_per_1k"] for r in rows], color=colors)
    requests.axvline(results["floor_writes_per_1k"], color="#d62728", linestyle="--", label="floor (writes)")
    if "floor_plus_aggregates_writes_per_1k" in results:
        requests.axvline(results["floor_plus_aggregates_writes_per_1k"], color="#d62728", linestyle=":",
                         label="floor + aggregates")
    requests.set_xlabel("DynamoDB requests per 1,000 events")
    requests.invert_yaxis()
    requests.legend(loc="lower right")
    speed = axes[1]
    speed.barh(systems, [r["events_per_s"] for r in rows], color=colors)
    speed.set_xscale("log")
    speed.set_xlabel("events/s (log)")
    speed.invert_yaxis()
    speed.set_yticklabels([])
    if results["curve"]:
        curve = axes[2]
        x = [p["conversations"] for p in results["curve"]]
        curve.plot(x, [p["events_per_s"] for p in results["curve"]], "o-", label="events/s")
        curve.set_xscale("log")
        curve.set_xlabel("conversations in state")
        curve.set_ylabel("events/s")
        memory = curve.twinx()
        memory.plot(x, [p["peak_rss_mb"] for p in results["curve"]], "s--", color="#ff7f0e", label="peak RSS MB")
        memory.set_ylabel("peak RSS MB")
        curve.set_title("this_catchup engine as state grows")
    figure.suptitle(f"{results['events']:,} Genesys events, same local DynamoDB; {results['machine']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
