"""The compiled hot path (setup.py) is the same program as its source.

The image's build stage copies what deploy/Dockerfile names and installs it as a wheel, which
compiles the hot path; here the same files build the same wheel (bench/compiled.py). Every
hot-path module must come out compiled (one that failed to compile would ship silently as Python:
`optional=True`), the whole unit tier, with its differential and property tests, must pass against
the compiled modules as it does against the sources, and a poisoned storm must replay alike, dead
letter for dead letter and state for state. ./dev's editable install stays source.
"""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compiled import ROOT, compare, compiled_checkout
from devstack.storm import StormShape, storm, write_storm
from processor.config import Settings
from processor.store import ShardStore, encode_state
from processor.runtime import HOT_PATH, extension_modules


#: the unit tier in one process whose `processor` is the compiled one, or it fails before a test runs
UNIT_TIER_COMPILED = r"""
import sys
import processor.engine
assert processor.engine.__file__.endswith(".so"), f"not compiled: {processor.engine.__file__}"
import pytest
sys.exit(pytest.main(["tests/unit", "-q", "-p", "no:cacheprovider"]))
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """The image's wheel, built once for this module, as a checkout."""
    return compiled_checkout(tmp_path_factory.mktemp("image"))


def test_the_image_wheel_compiles_the_hot_path_and_the_unit_tier_passes_against_it(image, tmp_path):
    assert set(extension_modules(image)) == set(HOT_PATH)
    assert extension_modules(ROOT) == {}  # the checkout itself (./dev's editable install) runs its sources

    result = subprocess.run([sys.executable, "-c", UNIT_TIER_COMPILED], cwd=image,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout)

    # the benchmark's comparison: a storm replayed by both, with equal reports
    events = tmp_path / "storm.jsonl"
    write_storm(str(events), StormShape(conversations=300))
    found = compare(events, rounds=1, checkout=image)
    assert found["compiled_modules"] == len(HOT_PATH) and found["reports_equal"] is True
    assert found["events"] > 3_000 and found["source_events_per_cpu_s"] > 0 and found["compiled_events_per_cpu_s"] > 0
    assert found["source_peak_rss_mb"] > 20 and found["compiled_peak_rss_mb"] > 20


#: what a hostile or broken producer puts in a field: beyond DynamoDB, beyond 64 bits, odd types and keys
POISON = [10 ** 40, 10 ** 130, -(2 ** 63) - 1, 12345678901234567890, 1.5, -0.0, 1e300, None, True, "", "x" * 300,
          "\U0001F600" * 100, {"": 1}, {"a": {"b": [1, {"": 2}]}}, [], {}, "tel:+15550100"]
FIELDS = ["queueId", "mediaType", "userId", "wrapupCode", "eventTime", "participantId", "conversationId",
          "interactingDurationMs", "acdOutcome", "disconnectType"]


def poisoned_storm(path: Path, seed: int) -> set[str]:
    """A storm with a fifth of its lines damaged (truncated, a field poisoned, nested deep around a
    long integer); the conversation ids it names."""
    rng = random.Random(seed)
    lines = list(storm(StormShape(conversations=200, seed=seed)))
    conversation_ids = {json.loads(line)["detail"]["eventBody"]["conversationId"] for line in lines}
    for index in rng.sample(range(len(lines)), len(lines) // 5):
        envelope = json.loads(lines[index])
        damage = rng.randrange(4)
        if damage == 0:
            lines[index] = lines[index][:rng.randrange(len(lines[index]))]
            continue
        body = envelope["detail"]["eventBody"]
        if damage == 3:  # written by hand: the standard library would not nest this deep
            levels = rng.choice([40, 300, *range(960, 1_025, 4)])  # the window where the stack decided
            body["extra"] = "NESTED"
            lines[index] = json.dumps(envelope).replace('"NESTED"', "[" * levels + "1" * 25 + "]" * levels).encode()
        else:
            body[rng.choice(FIELDS)] = rng.choice(POISON)
            lines[index] = json.dumps(envelope).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return conversation_ids


def replayed(checkout: Path, events: Path, conversation_ids: set[str], out: Path) -> tuple[bytes, list, dict]:
    """`processor replay --dry-run` run from `checkout`: its report, dead letters and RocksDB states."""
    out.mkdir()
    result = subprocess.run([sys.executable, "-m", "processor.cli", "replay", "--dry-run", "--no-progress",
                             "--shards", "3", "--report", str(out / "report.json"), "--dead-letter",
                             str(out / "dead.jsonl"), "--state-dir", str(out / "state"), str(events)],
                            cwd=checkout, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    letters = sorted((letter["id"], letter["reason"], letter.get("field"))
                     for letter in map(json.loads, (out / "dead.jsonl").read_text().splitlines()))
    states = {}
    for shard in sorted((out / "state").glob("shardId-*")):
        store = ShardStore(str(shard), Settings().retention_seconds, read_only=True)
        states[shard.name] = {cid: encode_state(state) for cid in sorted(conversation_ids)
                              if (state := store.get(cid)) is not None}
        store.close()
    return (out / "report.json").read_bytes(), letters, states


def test_poison_replays_alike_compiled_and_from_source(image, tmp_path):
    """Reports, dead letters (id, reason, field) and every RocksDB state equal, record for record: the
    first hostile review of the compiled build found a deep record read by one and refused by the other."""
    events = tmp_path / "poisoned.jsonl"
    conversation_ids = poisoned_storm(events, seed=11)
    source = replayed(ROOT, events, conversation_ids, tmp_path / "source")
    compiled = replayed(image, events, conversation_ids, tmp_path / "compiled")
    assert source == compiled
    report, letters, states = source
    assert len({reason.split(":")[0] for _, reason, _ in letters}) >= 5  # the poison reached many checks
    assert sum(map(len, states.values())) > 150
