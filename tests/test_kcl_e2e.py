"""End to end with the real KCL MultiLangDaemon (Java) running this processor against the local stack.

Each test asserts the final table against `processor replay` of the same events.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processor.config import Settings
from processor.demo import Producer, Stack, batches, replay_matches, shard_stats, total_counters, wait_until_drained
from processor.replay import read_lines
from processor.storm import StormShape, write_storm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "storm.jsonl"
    write_storm(str(path), StormShape(conversations=400, seed=21))
    return path


def put_all(producer: Producer, lines: list[bytes]) -> None:
    for batch in batches(iter(lines), 500):
        producer.send(batch)


def test_processor_demo_with_a_split_mid_run_matches_replay(tmp_path):
    """1 + 4: several shards, a split under load; parents end before children start."""
    export, report = tmp_path / "export.jsonl", tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "processor.cli", "demo", "--conversations", "400", "--shards", "3",
                             "--reshard", "--export", str(export), "--report", str(report),
                             "--workdir", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "table equals `processor replay`" in result.stdout and "yes" in result.stdout
    counts = json.loads(report.read_text())
    assert counts["events"] >= sum(1 for _ in read_lines(str(tmp_path / "work" / "storm.jsonl")))
    assert counts["changes"] > 0 and counts["rejected"] == 0
    assert counts["conversations"] == 400  # once each, though some moved to a child shard
    assert len(export.read_text().splitlines()) == 400
    log = (tmp_path / "work" / "worker-1.log").read_text()
    assert "shard ended; children take over" in log  # the split parent reached SHARD_END
    assert "shutdown requested; flushed and checkpointed" in log  # SIGTERM reached the children
    assert "exiting so KCL retries" not in log  # no child died


def test_sigterm_and_restart_resume_from_checkpoints_without_duplicate_writes(events, tmp_path):
    """2: the worker stops gracefully half-way; a new one resumes where it checkpointed."""
    lines = list(read_lines(str(events)))
    settings = Settings()
    with Stack(tmp_path, settings, shards=2) as stack:
        producer = Producer(stack.kinesis, settings.build_adapter())
        first = stack.start_daemon()
        put_all(producer, lines[: len(lines) // 2])
        wait_until_drained(stack, producer, timeout=300)
        assert first.stop() is not None
        put_all(producer, lines[len(lines) // 2:])
        stack.start_daemon("worker-2")
        wait_until_drained(stack, producer, timeout=300)
        stack.daemons[-1].stop()
        counters, _ = total_counters(shard_stats(str(stack.state_dir)))
        conflicts = sum(entry["sink"]["conflicts"] for entry in shard_stats(str(stack.state_dir)).values())
        assert conflicts == 0  # nothing was written twice: the restart replayed nothing already written
        assert replay_matches(stack, events, settings.build_adapter(), shards=2)
