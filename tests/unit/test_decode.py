"""Decode: every kind of bad record gets a reason, never an exception out of the engine (I7)."""
import pytest

from processor.decode import MAX_RECORD_BYTES, decode
from processor.model import Rejected


def test_a_json_object_decodes():
    assert decode(b'{"detail": {"a": 1}}') == {"detail": {"a": 1}}


@pytest.mark.parametrize("data, reason", [
    (b"x" * (MAX_RECORD_BYTES + 1), "oversized"),
    (b'{"a": "\xff\xfe"}', "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "not a JSON object: list"),
    (b'"text"', "not a JSON object: str"),
    (b"42", "not a JSON object: int"),
])
def test_bad_records_are_rejected_with_a_reason(data, reason):
    with pytest.raises(Rejected) as rejected:
        decode(data)
    assert rejected.value.reason.startswith(reason)


def test_rejection_reasons_carry_no_payload_content():
    with pytest.raises(Rejected) as rejected:
        decode(b'{"ani": "tel:+15555550955", broken')
    assert "5555" not in rejected.value.reason
