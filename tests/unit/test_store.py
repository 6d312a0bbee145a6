"""The RocksDB state store: states and the sequence commit together (I4), one database per shard (I8)."""
import time

import pytest

from processor import codec
from processor.reduce import ConversationState
from processor.store import ShardStore, decode_state, encode_state, shard_directory


def state(value="v", version=1):
    return ConversationState({"f": (10, value), "startTime": (-5, 5)}, [1, 2 ** 64 - 1], version)


def test_states_round_trip_exactly():
    original = ConversationState({"m": (3, {"a": [1, 2.5, None, True]})}, [7], 4)
    assert decode_state(encode_state(original)) == original


def decoded(store: ShardStore, conversation_ids: list[str]) -> dict[str, ConversationState]:
    """What the engine gets from a read of several states: fetched together, each decoded."""
    return {cid: decode_state(data) for cid, data in store.get_encoded(conversation_ids).items()}


def test_states_and_sequence_survive_a_reopen(tmp_path):
    store = ShardStore(str(tmp_path / "s"))
    assert store.last_sequence is None
    store.commit({"c1": state(), "c2": state("w", 2)}, "49590338271490256608559692538361571095921575989136588898")
    store.close()
    reopened = ShardStore(str(tmp_path / "s"))
    assert reopened.last_sequence == "49590338271490256608559692538361571095921575989136588898"
    assert reopened.get("c1") == state()
    assert decoded(reopened, ["c2", "absent"]) == {"c2": state("w", 2)}
    reopened.close()


def test_a_commit_is_all_or_nothing(tmp_path, monkeypatch):
    store = ShardStore(str(tmp_path / "s"))
    store.commit({"c1": state("old")}, "10")
    broken = {"c1": state("new"), "c2": ConversationState({"f": (1, object())})}
    with pytest.raises(TypeError):
        store.commit(broken, "20")
    assert store.last_sequence == "10"
    assert store.get("c1") == state("old")
    assert store.get("c2") is None
    store.close()


def test_one_database_per_shard(tmp_path):
    a = ShardStore(shard_directory(str(tmp_path), "shardId-000000000000"))
    b = ShardStore(shard_directory(str(tmp_path), "shardId-000000000001"))
    a.commit({"c": state("a")}, "1")
    assert b.get("c") is None and b.last_sequence is None
    with pytest.raises(Exception):
        ShardStore(shard_directory(str(tmp_path), "shardId-000000000000"))  # RocksDB: one writer
    a.close(), b.close()


def test_shard_directories_are_safe_names(tmp_path):
    assert shard_directory("/r", "shardId-000000000001") == "/r/shardId-000000000001"
    assert shard_directory("/r", "../etc/x") == "/r/.._etc_x"


def test_conversations_expire_after_the_retention_window(tmp_path):
    """I8: memory and disk do not grow with stream length; an expired conversation is simply
    read back from DynamoDB if it ever shows up again (see test_engine)."""
    store = ShardStore(str(tmp_path / "ttl"), retention_seconds=1)
    store.commit({"c": state()}, "1")
    assert store.get("c") == state()
    time.sleep(2.1)
    store.compact()
    assert store.get("c") is None
    store.close()


def test_a_store_still_held_by_a_closing_process_is_waited_for(tmp_path):
    import threading

    first = ShardStore(str(tmp_path / "s"))
    threading.Timer(0.6, first.close).start()  # the previous child lets go a moment later
    second = ShardStore(str(tmp_path / "s"), lock_wait_seconds=10)
    second.close()
    held = ShardStore(str(tmp_path / "s"))
    with pytest.raises(Exception, match="LOCK"):
        ShardStore(str(tmp_path / "s"))  # no wait: the error as it is
    held.close()


def test_a_store_records_its_format_and_refuses_another_with_a_clear_error(tmp_path):
    from processor.store import StoreFormatError

    store = ShardStore(str(tmp_path / "s"))
    store.commit({}, "7")
    store._db.put(b"m:format", b"3")  # as a future version would leave it
    store.close()
    with pytest.raises(StoreFormatError, match="format 3; this processor reads formats 1, 2"):
        ShardStore(str(tmp_path / "s"))
    rebuilt = ShardStore.rebuilt_if_foreign(str(tmp_path / "s"), None)  # what the KCL child does: a cache
    assert rebuilt.last_sequence is None
    rebuilt.close()


def format_1_value(state: ConversationState) -> bytes:
    """A state as format 1 wrote it: the recent keys as JSON numbers (twenty digits for most)."""
    registers = {name: [reg[0], reg[1]] for name, reg in state.registers.items()}
    return codec.dumps([state.version, state.recent_keys, registers])


def test_a_format_1_store_is_read_and_upgraded_state_by_state_as_states_change(tmp_path):
    from processor.store import FORMAT

    old, changed = state("old", 3), state("changed", 4)
    store = ShardStore(str(tmp_path / "s"))
    store.commit({}, "9")
    store._db.put(b"c:old", format_1_value(old))
    store._db.put(b"c:changed", format_1_value(changed))
    store._db.put(b"m:format", b"1")  # a store the previous release left
    store.close()

    upgraded = ShardStore(str(tmp_path / "s"))
    assert upgraded._db.get(b"m:format") == str(FORMAT).encode()  # older releases now refuse it
    assert decoded(upgraded, ["old", "changed"]) == {"old": old, "changed": changed}
    upgraded.commit({"changed": changed}, "10")
    assert upgraded._db.get(b"c:old") == format_1_value(old)  # untouched states stay as they are
    assert upgraded._db.get(b"c:changed") == encode_state(changed) != format_1_value(changed)
    assert decoded(upgraded, ["old", "changed"]) == {"old": old, "changed": changed}
    upgraded.close()


def test_format_2_writes_no_number_the_fast_json_path_must_hand_over():
    keys = [2 ** 64 - 1, 10 ** 19, 0, 12345]
    data = encode_state(ConversationState({"f": (1_764_000_000_000, "v")}, keys, 2))
    assert b"18446744073709551615" not in data and b"10000000000000000000" not in data
    assert decode_state(data).recent_keys == keys


def test_a_store_written_before_formats_were_recorded_is_read_as_format_1(tmp_path):
    store = ShardStore(str(tmp_path / "s"))
    store.commit({"c1": ConversationState({"q": (5, "Q1")}, [1], 2)}, "9")
    store._db.delete(b"m:format")  # the layout of 4dfb72b's stores, which recorded none
    store.close()
    again = ShardStore(str(tmp_path / "s"))
    assert again.get("c1").registers == {"q": (5, "Q1")} and again.last_sequence == "9"
    again.close()
