"""Operating commands against the local stack with the real daemon: `processor status`,
`processor reprocess`, `processor inspect`, and the per-flush EMF metrics."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from processor.adapters.genesys import GenesysAdapter
from processor.config import Settings
from devstack.demo import Producer, Stack, batches, wait_until_drained
from processor.metrics import NAMESPACE
from processor.operate import MASK
from processor.replay import read_lines, scan_items
from devstack.storm import StormShape, write_storm

pytestmark = pytest.mark.e2e


def processor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args], capture_output=True, text=True, timeout=300)


def emf_lines(log: Path) -> list[dict]:
    """The EMF lines as the daemon echoes its children's stderr: raw, one JSON object a line (it
    also logs each one wrapped in its own message, which CloudWatch does not parse as EMF)."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"_aws"')]


def test_status_reprocess_and_inspect_against_the_running_and_stopped_application(tmp_path):
    events = tmp_path / "storm.jsonl"
    write_storm(str(events), StormShape(conversations=150, seed=5))
    lines = list(read_lines(str(events)))
    settings = Settings()
    with Stack(tmp_path, settings, shards=2) as stack:
        producer = Producer(stack.kinesis, settings.build_adapter())
        for batch in batches(iter(lines[: len(lines) // 2]), 500):
            producer.send(batch)
        time.sleep(1.5)
        midpoint = datetime.now(timezone.utc)
        time.sleep(1.5)
        for batch in batches(iter(lines[len(lines) // 2:]), 500):
            producer.send(batch)
        worker = stack.start_daemon()
        wait_until_drained(stack, producer, timeout=300)
        common = ("--properties", str(tmp_path / "worker-1.properties"), "--endpoint", stack.emulator.endpoint)

        status = processor("status", *common)
        assert status.returncode == 0, status.stderr
        for shard, last in producer.last_sequence.items():
            row = next(line for line in status.stdout.splitlines() if f" {shard} " in line)
            assert "worker-1" in row and str(last) in row and "open" in row  # owner, checkpoint at the tip
        refused = processor("reprocess", *common, "--from", "TRIM_HORIZON", "--watch-seconds", "4")
        assert refused.returncode == 2 and "stop the application first" in refused.stderr

        some_id = scan_items(stack.dynamodb, settings.table)[0]["conversationId"]
        inspected = processor("inspect", some_id, *common, "--state-dir", str(stack.state_dir))
        found = json.loads(inspected.stdout)
        assert inspected.returncode == 0 and found["dynamodb"]["version"] >= 1
        projection = found["dynamodb"]["projection"]
        assert found["local"] and projection["mediaType"] in {"VOICE", "CHAT", "MESSAGE"}  # known non-PII: clear
        hidden = {name: value for name, value in projection.items() if name not in GenesysAdapter.public_fields}
        assert all(set(value.values()) <= {MASK} if isinstance(value, dict) else value == MASK
                   for value in hidden.values())  # attributes, participants: values masked, keys kept
        assert processor("inspect", "no-such-conversation", *common).returncode == 1

        worker.stop()
        # the worker's metrics: EMF lines whose deltas sum to every record it took in (the last
        # line of each shard written as it shut down)
        metrics = emf_lines(tmp_path / "worker-1.log")
        assert metrics and all(m["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE for m in metrics)
        assert sum(m["Events"] for m in metrics) == len(lines)
        assert {"Writes", "ExactRepeats", "NoopsCollapsed", "FlushLatency", "DeadLetters", "ShardSeconds"} <= set(metrics[0])
        before = scan_items(stack.dynamodb, settings.table)
        for start in (midpoint.isoformat(), "TRIM_HORIZON"):
            moved = processor("reprocess", *common, "--from", start, "--watch-seconds", "2",
                              "--state-dir", str(stack.state_dir))
            assert moved.returncode == 0, moved.stderr
            checkpoints = dict(re.findall(r"(shardId-\d+): checkpoint -> (\S+)", moved.stdout))
            if start == "TRIM_HORIZON":
                assert set(checkpoints.values()) == {"TRIM_HORIZON"}
            else:  # resumes just before the first record after the midpoint: inside the shard
                assert all(0 < int(c) < producer.last_sequence[s] for s, c in checkpoints.items())
            assert "cleared local state" in moved.stdout
            again = stack.start_daemon(f"worker-{start[:4]}")
            wait_until_drained(stack, producer, timeout=300)
            again.stop()
            assert scan_items(stack.dynamodb, settings.table) == before  # replay is idempotent: no write at all
