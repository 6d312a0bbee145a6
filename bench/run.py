"""The whole comparison: one storm, one metered emulator, every system in turn, then the curve."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from bench import PEERS, SYSTEMS
from bench.checks import history_checks, ledger_checks, table_checks
from bench import metrics_table_of
from bench.system import table_of
from bench.workload import Delivery, Truth, in_event_time_order, label, truth
from processor.config import Settings
from devstack.demo import APPLICATION
from devstack.emulator import LocalEmulator
from processor.dynamodb.item import KEY, item_size
from processor.replay import read_lines, scan_items
from devstack.storm import StormShape, write_storm


@dataclass(frozen=True)
class Plan:
    conversations: int
    systems: tuple[str, ...]
    curve: tuple[int, ...]
    seed: int = 42

    @classmethod
    def for_run(cls, quick: bool, conversations: int | None = None) -> Plan:
        if quick:  # under 5 minutes on 2 cores: the real daemon's start-up alone takes a minute
            return cls(conversations or 200, tuple(s for s in SYSTEMS if s != "this_kcl"), (1_000, 10_000, 30_000))
        return cls(conversations or 1_000, SYSTEMS, (1_000, 10_000, 100_000, 1_000_000))


def bench(plan: Plan, workdir: Path, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    events, sorted_events = workdir / "storm.jsonl", workdir / "storm-by-event-time.jsonl"
    write_storm(str(events), StormShape(conversations=plan.conversations, seed=plan.seed))
    deliveries = label(read_lines(str(events)), Settings().build_adapter())
    sorted_events.write_bytes(b"".join(d.data + b"\n" for d in in_event_time_order(deliveries)))
    facts = truth(deliveries)
    say(f"{len(deliveries):,} events over {len(facts.states):,} conversations; "
        f"floor {facts.floor_writes_per_1k:.0f} writes per 1,000 events")
    results: dict[str, Any] = {
        "machine": machine(), "events": len(deliveries), "conversations": len(facts.states),
        "duplicates": sum(d.duplicate for d in deliveries),
        "floor_writes_per_1k": round(facts.floor_writes_per_1k, 1), "systems": {}, "curve": []}
    with LocalEmulator(meter=True, log_path=str(workdir / "emulator.log")) as emulator:
        for system in plan.systems:
            say(f"running {system} …")
            results["systems"][system] = measure(system, deliveries, facts, emulator, events, sorted_events, workdir)
            say(f"{system}: {results['systems'][system]}")
    for conversations in plan.curve:
        say(f"curve: {conversations:,} conversations …")
        point, rss = run_process(["curve", "--conversations", str(conversations)], workdir)
        results["curve"].append({"conversations": conversations, "events": point["events"],
                                 "events_per_s": round(point["events"] / point["seconds"]), "peak_rss_mb": round(rss, 1)})
        say(f"curve: {results['curve'][-1]}")
    return results


def measure(system: str, deliveries: list[Delivery], facts: Truth, emulator: LocalEmulator, events: Path,
            sorted_events: Path, workdir: Path) -> dict[str, Any]:
    table = table_of(system)
    outcome, peak_rss = run_process([system, "--events", str(events), "--sorted-events", str(sorted_events),
                                     "--endpoint", emulator.endpoint], workdir / system)
    peak_rss = outcome.get("tree_peak_rss_mb", peak_rss)
    metered = emulator.meter(table, *side_tables(system))
    counts = {name: sum(metered[t]["counts"].get(name, 0) for t in (table, *side_tables(system)) if t != APPLICATION)
              for name in ("reads", "writes", "write_units", "conditional_failures")}
    if system in PEERS:
        writes = ledger_checks(deliveries, outcome["writes"])
    else:
        writes = history_checks(metered[table]["puts"])
    client = emulator.client("dynamodb")
    final = {item[KEY]: item for item in scan_items(client, table)}
    sizes = sorted(item_size(item) for page in client.get_paginator("scan").paginate(TableName=table)
                   for item in page.get("Items", []))
    verdict = table_checks(facts, first_of_each_event(deliveries), final)
    for name in (table, *side_tables(system)):
        try:
            client.delete_table(TableName=name)  # keep the emulator as small for the next system
        except client.exceptions.ResourceNotFoundException:
            pass
    per_1k = 1000 / len(deliveries)
    result = {
        "events_per_s": round(len(deliveries) / outcome["seconds"], 1),
        "ddb_requests_per_1k": round((counts["reads"] + counts["writes"]) * per_1k, 1),
        "ddb_reads_per_1k": round(counts["reads"] * per_1k, 1),
        "ddb_writes_per_1k": round(counts["writes"] * per_1k, 1),
        "wcu_per_1k": round(counts["write_units"] * per_1k, 1),
        **asdict(writes), **verdict, "peak_rss_mb": round(peak_rss, 1),
        "seconds": round(outcome["seconds"], 1),
        "conditional_failures_per_1k": round(counts["conditional_failures"] * per_1k, 1),
        "item_bytes_mean": round(sum(sizes) / len(sizes)) if sizes else 0,
        "item_bytes_max": sizes[-1] if sizes else 0,
        "hottest_key_writes_per_s": max((metered[t].get("hottest_key", {}).get("writes_per_second", 0)
                                         for t in (table, *side_tables(system)) if t != APPLICATION), default=0)}
    if system == "this_kcl":
        lease = metered.get(APPLICATION, {}).get("counts", {})
        result["kcl_lease_requests_per_1k"] = round((lease.get("reads", 0) + lease.get("writes", 0)) * per_1k, 1)
    if "retried" in outcome:
        result["retried_in_progress"] = outcome["retried"]
    return result


def side_tables(system: str) -> tuple[str, ...]:
    """The other tables a system writes besides its conversation table."""
    table = table_of(system)
    return {"check_then_write": (f"{table}-seen",), "powertools": (f"{table}-idempotency",),
            "this_live": (metrics_table_of(table),), "this_catchup": (metrics_table_of(table),),
            "this_kcl": (f"{table}-dead-letters", metrics_table_of(table), APPLICATION)}.get(system, ())


def first_of_each_event(deliveries: list[Delivery]) -> list[Delivery]:
    return [delivery for delivery in deliveries if not delivery.duplicate]


def run_process(arguments: list[str], workdir: Path) -> tuple[dict[str, Any], float]:
    """Run `bench.system ARGUMENTS` in its own process: its result and peak RSS (MiB)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".json", dir=workdir, delete=False) as out:
        out_path = Path(out.name)
    with open(workdir / "system.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.system", *arguments,
                                    "--workdir", str(workdir), "--out", str(out_path)],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=LocalEmulator.environment())
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark step {arguments[0]} failed; see {workdir / 'system.log'}")
    result = orjson.loads(out_path.read_bytes())
    out_path.unlink()
    return result, usage.ru_maxrss / 1024


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")

