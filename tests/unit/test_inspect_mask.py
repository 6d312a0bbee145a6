"""`processor inspect`'s masking rules (I10): every projection value is masked unless its field is
known non-PII (the adapter's `public_fields`) or shown (`[inspect] show`); `[inspect] mask` always
wins. The command itself, over a replayed table: tests/server/test_inspect_mask.py."""
from __future__ import annotations

from processor.adapters.generic import GenericAdapter
from processor.adapters.genesys import GenesysAdapter
from processor.operate import MASK, mask, shown_fields


def test_mask_keeps_only_shown_values():
    values = {"status": "Open", "customerPhone": "+15551234567", "attributes": {"a": "x"}, "tags": ["vip"]}
    assert mask(values) == {"status": MASK, "customerPhone": MASK, "attributes": {"a": MASK}, "tags": MASK}
    assert mask(values, {"status"})["status"] == "Open"


def test_shown_fields_are_public_plus_show_less_mask():
    assert shown_fields({"queueId", "ended"}, ["status"], ["queueId", "status"]) == {"ended"}
    assert GenericAdapter.public_fields == frozenset()
    assert {"queueId", "agentUserId", "durationMs"} <= GenesysAdapter.public_fields
    assert not {"attributes", "participants"} & GenesysAdapter.public_fields
