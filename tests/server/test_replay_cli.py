"""`processor replay` end to end, as an operator runs it: the console script in a subprocess."""
from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from processor.replay import REPORT_KEYS, shard_index, shard_name
from devstack.storm import StormShape, write_storm
from tests.conftest import T0

PROCESSOR = [sys.executable, "-m", "processor.cli"]


def replay(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*PROCESSOR, "replay", *args, "--no-progress"], capture_output=True, text=True,
                            timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def projections(export: list[dict]) -> dict[str, dict]:
    return {item["conversationId"]: {k: v for k, v in item.items() if not k.startswith("_") and k != "version"}
            for item in export}


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("events") / "storm.jsonl"
    write_storm(str(path), StormShape(conversations=300, seed=5))
    return path


def test_replay_with_its_own_emulator_writes_export_and_report(events, tmp_path):
    export, report = tmp_path / "export.jsonl", tmp_path / "report.json"
    result = replay(str(events), "--shards", "4", "--export", str(export), "--report", str(report))
    counts = json.loads(report.read_text())
    assert list(counts) == list(REPORT_KEYS) and all(isinstance(v, int) for v in counts.values())
    lines = events.read_text().splitlines()
    assert counts["events"] == len(lines)
    assert counts["events"] == sum(counts[k] for k in ("exact_repeats", "noop_collapsed", "stale", "rejected",
                                                       "changes"))
    assert counts["conversations"] == 300 and counts["rejected"] == 0
    # write requests: puts, and transactions of up to 100 conversations with their metric deltas
    assert 0 < counts["writes"] <= counts["changes"]
    items = read_jsonl(export)
    assert len(items) == 300
    assert all(isinstance(item["version"], int) and isinstance(item["_k"], str) for item in items)
    assert {item["mediaType"] for item in items} <= {"VOICE", "CHAT", "MESSAGE"}
    assert "events/s" in result.stdout  # the one-screen summary


def test_shard_count_and_arrival_order_do_not_change_the_table(events, emulator, tmp_path):
    lines = events.read_text().splitlines()
    random.Random(1).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    exports = []
    for shards, source in ((1, events), (3, shuffled)):
        export = tmp_path / f"export-{shards}.jsonl"
        replay(str(source), "--shards", str(shards), "--dynamodb-endpoint", emulator.endpoint, "--create-table",
               "--table", f"t-{uuid.uuid4().hex[:8]}", "--export", str(export))
        exports.append(projections(read_jsonl(export)))
    assert exports[0] == exports[1]


def test_replaying_again_over_the_same_table_writes_nothing(events, emulator, tmp_path):
    """The operator's re-run after an outage: idempotent by design."""
    table = f"t-{uuid.uuid4().hex[:8]}"
    runs = []
    for n in range(2):
        export, report = tmp_path / f"export{n}.jsonl", tmp_path / f"report{n}.json"
        replay(str(events), "--shards", "2", "--dynamodb-endpoint", emulator.endpoint, "--create-table", "--table", table,
               "--export", str(export), "--report", str(report))
        runs.append((read_jsonl(export), json.loads(report.read_text())))
    (first, _), (second, again) = runs
    assert again["writes"] == 0 and again["changes"] == 0
    assert first == second  # versions included


def test_poison_lines_go_to_the_dead_letter_file_beside_the_export(tmp_path, emulator):
    events = tmp_path / "mixed.jsonl"
    good = {"version": "0", "id": "1", "detail-type": "v2.detail.events.conversation.{id}.acd.start",
            "time": "2025-01-01T00:00:00Z",
            "detail": {"topicName": "v2.detail.events.conversation.c1.acd.start",
                       "eventBody": {"conversationId": "c1", "eventTime": T0, "queueId": "q"}}}
    events.write_text("\n".join([json.dumps(good), "{oops", "[]", json.dumps({"detail": {"topicName": "x"}})]) + "\n")
    export, report = tmp_path / "out" / "export.jsonl", tmp_path / "report.json"
    result = replay(str(events), "--dynamodb-endpoint", emulator.endpoint, "--create-table", "--table", f"t-{uuid.uuid4().hex[:8]}",
                    "--export", str(export), "--report", str(report))
    assert json.loads(report.read_text())["rejected"] == 3
    letters = read_jsonl(tmp_path / "out" / "export.dead-letters.jsonl")
    assert [letter["reason"].split(":")[0] for letter in letters] == [
        "not JSON", "not a JSON object", "topicName is not a Genesys conversation topic"]
    assert "dead letters: 3" in result.stdout


def test_the_generic_adapter_from_a_settings_file(tmp_path, emulator):
    config = tmp_path / "cxone.toml"
    config.write_text('[adapter]\nkind = "generic"\nconversation_id = "$.detail.contactId"\n'
                      'event_time = "$.detail.timestamp"\n[adapter.state]\nstatus = "$.detail.status"\n')
    events = tmp_path / "cxone.jsonl"
    rows = [{"id": str(n), "detail": {"contactId": "k1", "timestamp": T0 + t, "status": s}}
            for n, (t, s) in enumerate([(3, "Closed"), (1, "Active"), (2, "Hold"), (2, "Hold")])]
    events.write_text("\n".join(json.dumps(r) for r in rows))
    export = tmp_path / "export.jsonl"
    replay(str(events), "--config", str(config), "--dynamodb-endpoint", emulator.endpoint, "--create-table",
           "--table", f"t-{uuid.uuid4().hex[:8]}", "--export", str(export))
    (item,) = read_jsonl(export)
    assert {k: v for k, v in item.items() if not k.startswith("_")} == {"conversationId": "k1", "status": "Closed",
                                                                       "version": 1}


def test_the_export_keeps_integers_of_any_size(tmp_path, emulator):
    """1e20 is stored as the integer 10**20, beyond 64 bits: the export must write it, exactly."""
    config = tmp_path / "generic.toml"
    config.write_text('[adapter]\nkind = "generic"\nconversation_id = "$.detail.id"\nevent_time = "$.detail.t"\n'
                      '[adapter.state]\namount = "$.detail.amount"\n')
    events = tmp_path / "big.jsonl"
    events.write_text(json.dumps({"detail": {"id": "k1", "t": T0, "amount": 1e20}}) + "\n")
    export = tmp_path / "export.jsonl"
    replay(str(events), "--config", str(config), "--dynamodb-endpoint", emulator.endpoint, "--create-table",
           "--table", f"t-{uuid.uuid4().hex[:8]}", "--export", str(export))
    assert b'"amount":100000000000000000000' in export.read_bytes()


def test_a_table_that_does_not_exist_is_not_created_unless_asked(events, emulator, dynamodb):
    """An operator's mistyped --table would otherwise receive the whole replay."""
    refused = replay(str(events), "--dynamodb-endpoint", emulator.endpoint, "--table", "conversatoins", check=False)
    assert refused.returncode == 2 and "table conversatoins does not exist" in refused.stderr
    assert "conversatoins" not in dynamodb.list_tables()["TableNames"]


@pytest.mark.parametrize("args, message", [
    (["missing.jsonl"], "events file not found"),
    (["{events}", "--config", "missing.toml"], "settings file not found"),
    (["{events}", "--shards", "0", "--dry-run"], "--shards must be at least 1"),
    (["{events}", "--dry-run", "--export", "x.jsonl"], "read the tables, which --dry-run does not write"),
    (["{events}", "--dynamodb-endpoint", "http://127.0.0.1:9", "--table", "t"], "Could not connect"),
])
def test_mistakes_get_a_clear_error_and_exit_2(args, message, events):
    result = replay(*[a.format(events=events) for a in args], check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_routing_matches_the_kinesis_hash_ranges(emulator):
    """Each partition key lands on the shard Kinesis itself would pick."""
    kinesis = boto3.client("kinesis", endpoint_url=emulator.endpoint, region_name="us-east-1")
    stream = f"routing-{uuid.uuid4().hex[:6]}"
    kinesis.create_stream(StreamName=stream, ShardCount=5)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})
    for n in range(200):
        key = str(uuid.UUID(int=random.Random(n).getrandbits(128)))
        landed = kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey=key)["ShardId"]
        assert landed == shard_name(shard_index(key, 5))


def test_a_state_dir_resumes_its_own_input_and_refuses_another(events, emulator, tmp_path):
    """Records at or below a shard's committed sequence are skipped, and replay numbers records 1..N
    per simulated shard: state kept for one input would silently skip most of another's."""
    state, table = tmp_path / "state", f"t-{uuid.uuid4().hex[:8]}"
    common = ("--dynamodb-endpoint", emulator.endpoint, "--create-table", "--table", table, "--state-dir", str(state))
    replay(str(events), "--shards", "2", *common)

    other = tmp_path / "other.jsonl"
    write_storm(str(other), StormShape(conversations=20, seed=6))
    config = tmp_path / "generic.toml"
    config.write_text('[adapter]\nkind = "generic"\nconversation_id = "$.detail.eventBody.conversationId"\n'
                      'event_time = "$.detail.eventBody.eventTime"\n[adapter.state]\nq = "$.detail.eventBody.queueId"\n')
    elsewhere = ("--dynamodb-endpoint", emulator.endpoint, "--create-table", "--table", "another", "--state-dir", str(state))
    dry = ("--dry-run", "--state-dir", str(state))
    for args, differs in (([str(other), "--shards", "2", *common], "another events file"),
                          ([str(events), "--shards", "3", *common], "--shards 2 (now 3)"),
                          ([str(events), "--shards", "2", "--config", str(config), *common], "other [adapter] settings"),
                          ([str(events), "--shards", "2", *elsewhere], "another table"),
                          ([str(events), "--shards", "2", *dry], "another table")):
        refused = replay(*args, check=False)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert differs in refused.stderr and "fresh --state-dir" in refused.stderr

    assert (state / "replay-manifest.json").is_file()
    report = tmp_path / "again.json"
    resumed = replay(str(events), "--shards", "2", *common, "--report", str(report))
    counts = json.loads(report.read_text())
    assert list(counts) == list(REPORT_KEYS) and counts["events"] == 0 and counts["writes"] == 0
    skipped = len(events.read_text().splitlines())
    assert re.search(rf"\bskipped\W+{skipped:,}\b", resumed.stdout), resumed.stdout  # the summary row


def test_a_state_dir_kept_for_a_run_on_its_own_emulator_cannot_be_resumed(events, tmp_path):
    """Without --dynamodb-endpoint the table lives as long as the run: resuming would skip into nothing."""
    state = tmp_path / "state"
    replay(str(events), "--state-dir", str(state))
    refused = replay(str(events), "--state-dir", str(state), check=False)
    assert refused.returncode == 2 and "whose table is gone" in refused.stderr


def test_a_state_dir_with_shard_state_but_no_manifest_is_refused(events, tmp_path):
    (tmp_path / "state" / "shardId-000000000000").mkdir(parents=True)
    refused = replay(str(events), "--dry-run", "--state-dir", str(tmp_path / "state"), check=False)
    assert refused.returncode == 2 and "no replay-manifest.json" in refused.stderr
