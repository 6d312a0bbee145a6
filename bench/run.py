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

from bench import METRICS_PEERS, OURS, PEERS, SYSTEMS, metrics_table_of
from bench.checks import cells_wrong, history_checks, ledger_checks, table_checks
from bench.compiled import compare, compiled_checkout
from bench.peers import ADD_PER_EVENT_METRICS
from bench.system import table_of
from bench.workload import Delivery, Truth, in_event_time_order, label, truth
from processor.analytics.contribution import QUEUE
from processor.analytics.reader import MetricsReader
from processor.config import Settings
from processor.runtime import extension_modules
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
    #: the image's compiled engine against the sources: a storm of this many conversations, rounds each
    compiled: tuple[int, int]
    seed: int = 42

    @classmethod
    def for_run(cls, quick: bool, conversations: int | None = None) -> Plan:
        if quick:  # under 5 minutes on 2 cores: the real daemon's start-up alone takes a minute
            return cls(conversations or 200, tuple(s for s in SYSTEMS if s != "this_kcl"), (1_000, 10_000, 30_000),
                       compiled=(300, 1))
        return cls(conversations or 1_000, SYSTEMS, (1_000, 10_000, 100_000, 1_000_000), compiled=(10_000, 5))


def bench(plan: Plan, workdir: Path, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    workdir = workdir.resolve()  # the systems of ours run from the image's checkout
    workdir.mkdir(parents=True, exist_ok=True)
    events, sorted_events = workdir / "storm.jsonl", workdir / "storm-by-event-time.jsonl"
    write_storm(str(events), StormShape(conversations=plan.conversations, seed=plan.seed))
    settings = Settings()
    deliveries = label(read_lines(str(events)), settings.build_adapter())
    sorted_events.write_bytes(b"".join(d.data + b"\n" for d in in_event_time_order(deliveries)))
    facts = truth(deliveries, settings.analytics)
    say(f"{len(deliveries):,} events over {len(facts.states):,} conversations; "
        f"floor {facts.floor_writes_per_1k:.0f} writes per 1,000 events, "
        f"{facts.floor_plus_aggregates_writes_per_1k:.0f} with the aggregates; {len(facts.metrics):,} metrics cells")
    results: dict[str, Any] = {
        "machine": machine(), "events": len(deliveries), "conversations": len(facts.states),
        "duplicates": sum(d.duplicate for d in deliveries),
        "floor_writes_per_1k": round(facts.floor_writes_per_1k, 1),
        "floor_plus_aggregates_writes_per_1k": round(facts.floor_plus_aggregates_writes_per_1k, 1),
        "metrics_cells": len(facts.metrics), "systems": {}, "curve": []}
    say("building the image's wheel: this processor runs as production does, its hot path compiled …")
    image = compiled_checkout(workdir / "image")
    results["ours_compiled_modules"] = len(extension_modules(image))
    with LocalEmulator(meter=True, log_path=str(workdir / "emulator.log")) as emulator:
        for system in plan.systems:
            say(f"running {system} …")
            results["systems"][system] = measure(system, deliveries, facts, emulator, events, sorted_events, workdir,
                                                 image if system in OURS else None)
            say(f"{system}: {results['systems'][system]}")
    for conversations in plan.curve:
        say(f"curve: {conversations:,} conversations …")
        point, rss = run_process(["curve", "--conversations", str(conversations)], workdir, image)
        results["curve"].append({"conversations": conversations, "events": point["events"],
                                 "events_per_s": round(point["events"] / point["seconds"]), "peak_rss_mb": round(rss, 1)})
        say(f"curve: {results['curve'][-1]}")
    results["compiled"] = compiled_engine(plan, workdir / "compiled", image, say)
    return results


def compiled_engine(plan: Plan, workdir: Path, image: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The image's engine (its hot path compiled) side by side with the sources'."""
    conversations, rounds = plan.compiled
    say(f"compiled: {rounds} rounds over {conversations:,} conversations, the image's engine and the sources' …")
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "storm.jsonl"
    write_storm(str(events), StormShape(conversations=conversations, seed=plan.seed))
    found = compare(events, rounds, image)
    say(f"compiled: {found}")
    return found


def measure(system: str, deliveries: list[Delivery], facts: Truth, emulator: LocalEmulator, events: Path,
            sorted_events: Path, workdir: Path, image: Path | None) -> dict[str, Any]:
    table = table_of(system)
    outcome, peak_rss = run_process([system, "--events", str(events), "--sorted-events", str(sorted_events),
                                     "--endpoint", emulator.endpoint], workdir / system, image)
    peak_rss = outcome.get("tree_peak_rss_mb", peak_rss)
    metered = emulator.meter(table, *side_tables(system))
    counts = {name: sum(metered[t]["counts"].get(name, 0) for t in (table, *side_tables(system)) if t != APPLICATION)
              for name in ("reads", "writes", "write_units", "conditional_failures")}
    client = emulator.client("dynamodb")
    sizes = sorted(item_size(item) for page in client.get_paginator("scan").paginate(TableName=table)
                   for item in page.get("Items", []))
    projection: dict[str, int | None]
    if system in METRICS_PEERS:  # no conversation table: the projection checks do not apply
        projection = {"leaked_duplicates": None, "stale_overwrites": None, "mismatches": None, "lost_updates": None}
        wrong = cells_wrong(facts.metrics, scan_items(client, table), {QUEUE: ADD_PER_EVENT_METRICS})
    else:
        writes = ledger_checks(deliveries, outcome["writes"]) if system in PEERS else history_checks(metered[table]["puts"])
        final = {item[KEY]: item for item in scan_items(client, table)}
        projection = {**asdict(writes), **table_checks(facts, first_of_each_event(deliveries), final)}
        wrong = cells_wrong(facts.metrics, MetricsReader(client, metrics_table_of(table), Settings().interval_minutes)
                            .rows()) if system in OURS else None
    for name in (table, *side_tables(system)):
        try:
            client.delete_table(TableName=name)  # keep the emulator as small for the next system
        except client.exceptions.ResourceNotFoundException:
            pass
    per_1k = 1000 / len(deliveries)
    hot_keys = [metered[t].get("hottest_key", {}) for t in (table, *side_tables(system)) if t != APPLICATION]
    hottest = max(((hot.get("writes_per_second", 0), hot.get("key", "")) for hot in hot_keys), default=(0, ""))
    result = {
        "events_per_s": round(len(deliveries) / outcome["seconds"], 1), **cpu_result(outcome, len(deliveries)),
        "ddb_requests_per_1k": round((counts["reads"] + counts["writes"]) * per_1k, 1),
        "ddb_reads_per_1k": round(counts["reads"] * per_1k, 1),
        "ddb_writes_per_1k": round(counts["writes"] * per_1k, 1),
        "wcu_per_1k": round(counts["write_units"] * per_1k, 1),
        **projection, "cells_wrong": wrong, "peak_rss_mb": round(peak_rss, 1),
        "seconds": round(outcome["seconds"], 1), "compiled_modules": outcome["compiled_modules"],
        "conditional_failures_per_1k": round(counts["conditional_failures"] * per_1k, 1),
        "item_bytes_mean": round(sum(sizes) / len(sizes)) if sizes else 0,
        "item_bytes_max": sizes[-1] if sizes else 0,
        "hottest_key_writes_per_s": hottest[0], "hottest_key": hottest[1],
        # ours in this process only (I13: at most 1); None where it is not measured
        "hottest_key_writes_per_flush": outcome.get("hottest_key_writes_per_flush")}
    if "hottest_key_per_flush" in outcome:
        result["hottest_key_per_flush"] = outcome["hottest_key_per_flush"]
        result["flushes_writing"] = outcome["flushes"]
    if system == "this_kcl":
        lease = metered.get(APPLICATION, {}).get("counts", {})
        result["kcl_lease_requests_per_1k"] = round((lease.get("reads", 0) + lease.get("writes", 0)) * per_1k, 1)
    if "retried" in outcome:
        result["retried_in_progress"] = outcome["retried"]
    return result


def cpu_result(outcome: dict[str, Any], events: int) -> dict[str, Any]:
    """CPU seconds of the system's own processes (`bench.cpu`), and events per CPU-second; for
    this_kcl also the daemon's and the children's apart, and the children's µs per record they took in."""
    cpu = outcome["cpu_seconds"]
    result = {"cpu_s": round(cpu, 3), "events_per_cpu_s": round(events / cpu) if cpu > 0 else None}
    if "children_cpu_seconds" in outcome:
        children = outcome["children_cpu_seconds"]
        result.update(kcl_daemon_cpu_s=round(outcome["daemon_cpu_seconds"], 2), kcl_children_cpu_s=round(children, 2),
                      kcl_child_us_per_record=round(children / outcome["events"] * 1e6) if outcome["events"] else None)
    return result


def side_tables(system: str) -> tuple[str, ...]:
    """The other tables a system writes besides its conversation table."""
    table = table_of(system)
    return {"check_then_write": (f"{table}-seen",), "powertools": (f"{table}-idempotency",),
            "this_live": (metrics_table_of(table),), "this_catchup": (metrics_table_of(table),),
            "this_kcl": (f"{table}-dead-letters", metrics_table_of(table), APPLICATION)}.get(system, ())


def first_of_each_event(deliveries: list[Delivery]) -> list[Delivery]:
    return [delivery for delivery in deliveries if not delivery.duplicate]


def run_process(arguments: list[str], workdir: Path, image: Path | None = None) -> tuple[dict[str, Any], float]:
    """Run `bench.system ARGUMENTS` in its own process: its result and its own peak RSS (MiB).
    `image`: a `compiled_checkout` to run it in (its processor, and its KCL children's, the image's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".json", dir=workdir, delete=False) as out:
        out_path = Path(out.name)
    with open(workdir / "system.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "bench.system", *arguments,
                                    "--workdir", str(workdir), "--out", str(out_path)],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=image,
                                   env=LocalEmulator.environment({**os.environ, "PYTHONPATH": str(image)} if image
                                                                 else None))
        status = process.wait()
    if status != 0:
        raise RuntimeError(f"benchmark step {arguments[0]} failed; see {workdir / 'system.log'}")
    result = orjson.loads(out_path.read_bytes())
    out_path.unlink()
    return result, result.pop("own_peak_rss_mb")


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")

