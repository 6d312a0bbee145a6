"""`processor inspect` masks every projection value unless its field is known non-PII (the adapter's
`public_fields`) or the operator shows it (`[inspect] show`); `[inspect] mask` always wins (I10):
the command as an operator runs it, over a table `processor replay` filled. The masking rules
alone: tests/unit/test_inspect_mask.py."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from processor.operate import MASK
from tests.conftest import T0, detail_event

PROCESSOR = [sys.executable, "-m", "processor.cli"]
GENERIC = ('[adapter]\nkind = "generic"\nconversation_id = "$.detail.contactId"\nevent_time = "$.detail.timestamp"\n'
           '[adapter.state]\ncustomerPhone = "$.detail.customerPhone"\nstatus = "$.detail.status"\n')


def run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*PROCESSOR, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


class Deployment:
    """Events replayed into a fresh table and a kept state dir, then inspected as an operator does."""

    def __init__(self, root: Path, endpoint: str, adapter: str, envelopes: list[dict]):
        self.root, self.endpoint, self.adapter = root, endpoint, adapter
        self.table, self.state = f"t-{uuid.uuid4().hex[:8]}", root / "state"
        self.properties = root / "kcl.properties"
        self.properties.write_text("streamName = s\napplicationName = a\nregionName = us-east-1\n")
        events = root / "events.jsonl"
        events.write_text("".join(json.dumps(e) + "\n" for e in envelopes))
        run("replay", str(events), "--config", str(self.config("")), "--dynamodb-endpoint", endpoint, "--create-table",
            "--table", self.table, "--state-dir", str(self.state), "--dead-letter", str(root / "dl.jsonl"),
            "--no-progress")

    def config(self, inspect: str) -> Path:
        path = self.root / f"settings-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(f'{self.adapter}[dynamodb]\ntable = "{self.table}"\n{inspect}')
        return path

    def inspect(self, conversation_id: str, inspect: str = "") -> list[dict]:
        """The projection as DynamoDB holds it, then as each shard's local state holds it."""
        found = json.loads(run("inspect", conversation_id, "--properties", str(self.properties),
                               "--endpoint", self.endpoint, "--config", str(self.config(inspect)),
                               "--state-dir", str(self.state)).stdout)
        assert found["conversationId"] == conversation_id and found["dynamodb"]["version"] == 1
        assert found["local"], "the replay's state dir holds the conversation"
        return [found["dynamodb"]["projection"], *(shard["projection"] for shard in found["local"].values())]


def test_generic_fields_are_masked_unless_the_operator_shows_them(tmp_path, emulator):
    envelopes = [{"id": "1", "detail": {"contactId": "k1", "timestamp": T0, "customerPhone": "+15551234567",
                                        "status": "Active"}}]
    deployment = Deployment(tmp_path, emulator.endpoint, GENERIC, envelopes)
    for projection in deployment.inspect("k1"):
        assert projection == {"customerPhone": MASK, "status": MASK}
    for projection in deployment.inspect("k1", '[inspect]\nshow = ["status"]\n'):
        assert projection == {"customerPhone": MASK, "status": "Active"}


def test_genesys_ids_in_clear_attributes_masked_and_mask_wins(tmp_path, emulator):
    envelopes = [detail_event("c1", "acd.start", 1, queueId="queue-7"),
                 detail_event("c1", "attributes", 2, attributes={"accountNumber": "12345678"})]
    deployment = Deployment(tmp_path, emulator.endpoint, "", envelopes)
    for projection in deployment.inspect("c1"):
        assert projection["queueId"] == "queue-7" and projection["mediaType"] == "VOICE"
        assert projection["attributes"] == {"accountNumber": MASK}  # which keys are set, not their values
    for projection in deployment.inspect("c1", '[inspect]\nmask = ["queueId"]\nshow = ["queueId"]\n'):
        assert projection["queueId"] == MASK and projection["mediaType"] == "VOICE"
