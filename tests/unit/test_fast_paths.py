"""Every shortcut the engine takes for speed against the general path it shortcuts (issue 12).

Each fast path decides the common case cheaply and hands everything else to the general code:
msgspec before orjson before the exact JSON parser (`codec.loads`), the plain-value check before `storable`, the
register count before the participant census, the stamp comparison before `wins`, the store's
packed keys before its format-1 numbers, the states kept in memory after a flush before RocksDB
(`warm_states`), records taken in chunks before the whole batch at once, and a batch's
conversations read ahead before each chunk reads its own. The properties here say the two always agree; the last
test runs whole records, poison included, through the engine both ways.
"""
from __future__ import annotations

import json
import random
import sys

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from processor import codec, engine as engine_module, reduce as reduce_module
from processor.adapters.genesys import GenesysAdapter
from processor.config import Settings
from processor.analytics.sessions import is_session, participant_of
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.sink import DynamoSink, NullSink
from processor.engine import CHUNK_RECORDS, FlushPolicy, ShardEngine, _admits_participant
from processor.limits import MAX_SESSION_PARTICIPANTS, Unstorable, plainly_storable, storable
from processor.model import Record
from processor.replay import replay, route
from processor import runtime
from processor.runtime import HOT_PATH, compiled_modules, describe_build
from processor.reduce import ConversationState, wins
from processor.store import ShardStore, decode_state, encode_state
from tests.conftest import T0, detail_event
from tests.twins import MemoryDynamoDB

ODD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "\u0000", "\u2028", "\U0001F600", "e\u0301", "\ufeff", "\"\\/"])
NUMBERS = st.integers(min_value=-(2 ** 130), max_value=2 ** 130) | st.sampled_from(
    [2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 2 ** 64 - 1, 2 ** 64, 10 ** 18, 10 ** 19, 10 ** 38])
SCALARS = st.none() | st.booleans() | NUMBERS | ODD_TEXT | st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ODD_TEXT, inner, max_size=4), max_leaves=12)


def same_json(a, b) -> bool:
    """Equal with types told apart (1, 1.0 and true are three values)."""
    return json.dumps(a) == json.dumps(b)


@given(JSON_VALUES, st.booleans())
def test_codec_reads_every_document_as_the_exact_parser_does(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert same_json(codec.loads(data), json.loads(data))


@given(st.lists(st.tuples(ODD_TEXT, JSON_VALUES), min_size=1, max_size=5))
def test_duplicate_keys_resolve_alike_on_both_paths(pairs):
    """JSON text may repeat a key; both parsers keep the last, so the fast path may not differ."""
    data = ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs + pairs[:1]) + "}").encode()
    assert same_json(codec.loads(data), json.loads(data))


NUMBER_TEXTS = st.builds(
    lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
    st.sampled_from(["", "-"]),
    st.sampled_from(["0"]) | st.from_regex(r"[1-9][0-9]{0,45}", fullmatch=True),
    st.sampled_from([""]) | st.from_regex(r"\.[0-9]{1,45}", fullmatch=True),
    st.sampled_from([""]) | st.from_regex(r"[eE][+-]?[0-9]{1,4}", fullmatch=True))


@given(NUMBER_TEXTS)
def test_codec_reads_every_number_as_the_exact_parser_does(text):
    """Long mantissas, large exponents, 19 and 20 digits, -0: the value, or the same refusal."""
    data = f"[{text}, {{\"n\": {text}}}]".encode()
    exact = json.loads(data)
    if exact[0] in (float("inf"), float("-inf")):  # an infinite double: refused, with orjson's reason
        with pytest.raises(orjson.JSONDecodeError, match="infinity"):
            codec.loads(data)
    else:
        assert same_json(codec.loads(data), exact)


#: bytes that make a document wrong in every way a parser can be: grammar, escapes, UTF-8
DAMAGE = st.sampled_from([b"", b",", b"}", b"]", b"{", b"[", b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\xff",
                          b"\xed\xa0\x80", b"\xc3", b"\x00", b"\x01", b"\x0b", b"\xef\xbb\xbf", b"NaN", b"Infinity",
                          b"-", b".", b"e", b"01", b"tru", b"null", b":", b" ", b"1e400", b"9" * 25])


@given(JSON_VALUES, st.lists(st.tuples(st.integers(0, 200), st.integers(0, 3), DAMAGE), min_size=1, max_size=3))
def test_codec_refuses_what_the_general_way_refuses_and_reads_the_rest_alike(value, damages):
    """Damaged documents: where the general way (orjson, then the exact parser) refuses, `loads`
    refuses with the same error and reason (the dead letter's); elsewhere both read the same."""
    data = json.dumps(value, ensure_ascii=False).encode("utf-8")
    for at, cut, piece in damages:
        at %= len(data) + 1
        data = data[:at] + piece + data[at + cut:]
    try:
        expected = codec.exact_loads(data)
    except orjson.JSONDecodeError as refusal:
        with pytest.raises(orjson.JSONDecodeError) as raised:
            codec.loads(data)
        assert (raised.value.msg, raised.value.pos) == (refusal.msg, refusal.pos)
        return
    assert same_json(codec.loads(data), expected)


@pytest.mark.parametrize("depth", [1, 100, 900, 1_024, 1_025, 5_000])
def test_deep_documents_are_read_or_refused_as_the_general_way_does(depth):
    """msgspec recurses on the interpreter's stack, orjson has its own limit: past either, the
    general way decides, so the outcome never depends on how deep the caller's stack is."""
    data = b"[" * depth + b"]" * depth
    try:
        expected = codec.exact_loads(data)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            codec.loads(data)
    else:
        assert nesting(codec.loads(data)) == nesting(expected) == depth


@pytest.mark.parametrize("depth, read", [(1_024, True), (1_025, False), (3_000, False)])
def test_the_nesting_limit_is_orjsons_whatever_the_interpreters(depth, read):
    """msgspec would nest as deep as the recursion limit lets it (and past its C stack when the
    limit is raised far enough): raised here, a document deeper than orjson's 1,024 levels is still
    refused with orjson's reason, and one within them still read."""
    data = b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        if read:
            assert nesting(codec.loads(data)["a"]) == depth - 1
        else:
            with pytest.raises(orjson.JSONDecodeError, match="depth limit exceeded"):
                codec.loads(data)
    finally:
        sys.setrecursionlimit(limit)


def at_stack_depth(frames: int, call):
    """`call()`, from `frames` Python frames deeper than here."""
    return call() if frames == 0 else at_stack_depth(frames - 1, call)


def nested(levels: int, leaf=0) -> list:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("frames", [0, 300, 700])
def test_how_deep_the_exact_read_and_write_go_never_depends_on_the_callers_stack(frames, tmp_path):
    """The standard library's exact read and write recurse against the interpreter's limit, which
    also counts the caller's frames (a compiled caller has none), so a record's fate hung on who
    read it: 1,010 levels around a 20-digit number are read exactly from any depth (were refused),
    and a value only the standard library can write is written to orjson's 254 levels and refused
    past them, as orjson refuses it, from any depth (was written or crashed with RecursionError)."""
    line = b'{"x":' + b"[" * 1_010 + b"12345678901234567890" + b"]" * 1_010 + b"}"
    assert nesting(at_stack_depth(frames, lambda: codec.loads(line))["x"]) == 1_010

    big = 10 ** 30
    within = {"big": big, "zz": nested(253)}  # 254 containers, the dict included
    assert at_stack_depth(frames, lambda: codec.dumps(within, sort_keys=True)) == (
        b'{"big":' + str(big).encode() + b',"zz":' + b"[" * 253 + b"0" + b"]" * 253 + b"}")
    for beyond in ({"big": big, "zz": nested(254)}, {"big": big, "zz": nested(990)}):
        with pytest.raises(orjson.JSONEncodeError, match="Recursion limit reached"):
            at_stack_depth(frames, lambda: codec.dumps(beyond, sort_keys=True))
    with pytest.raises(orjson.JSONEncodeError, match="Recursion limit reached"):
        orjson.dumps({"zz": nested(254)})  # the limit is orjson's own

    # a record whose event key cannot be written is dead-lettered for that, with or without the big integer
    records = [codec.dumps(detail_event("c1", "acd.start", 0, participantId="p", queueId="q", zz="ZZ", **extra))
               .replace(b'"ZZ"', b"[" * 990 + b"0" + b"]" * 990) for extra in ({"big": big}, {})]
    dead_letters = JsonlDeadLetters(str(tmp_path / "dead.jsonl"))
    result = at_stack_depth(frames, lambda: replay(records, GenesysAdapter(), NullSink(), dead_letters,
                                                   state_root=str(tmp_path / "state")))
    reasons = [orjson.loads(line)["reason"] for line in (tmp_path / "dead.jsonl").read_bytes().splitlines()]
    assert result.counters.rejected == 2 and reasons == ["adapter error: TypeError"] * 2  # orjson's errors are TypeErrors


def nesting(value) -> int:
    """How deeply lists nest in `value`, first elements only (`==` would recurse too deep)."""
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    return depth


def test_an_integer_too_long_for_a_double_is_read_exactly_not_refused():
    """The one difference from the general way alone (orjson calls 309 digits and more an infinite double);
    an integer Python itself will not read (over 4,300 digits) is still refused."""
    long = 10 ** 400 + 7
    assert codec.loads(f'{{"n": {long}}}'.encode()) == {"n": long}
    with pytest.raises(orjson.JSONDecodeError, match="infinity"):
        codec.exact_loads(f"[{long}]".encode())
    with pytest.raises(orjson.JSONDecodeError):
        codec.loads(b"[1" + b"0" * 5_000 + b"]")


@given(JSON_VALUES)
def test_codec_writes_what_it_reads(value):
    assert same_json(codec.loads(codec.dumps(value)), value)


@given(JSON_VALUES)
def test_a_plainly_storable_value_is_one_storable_leaves_as_it_is(value):
    if plainly_storable(value):
        assert storable(value) is value


@given(st.lists(st.none() | st.booleans() | NUMBERS | ODD_TEXT, max_size=6) | st.none() | st.booleans() | NUMBERS
       | ODD_TEXT)
def test_flat_values_storable_leaves_alone_are_all_recognised(value):
    """The fast path covers what sessions and plain fields carry (else it would be no shortcut)."""
    try:
        unchanged = storable(value) is value
    except Unstorable:
        unchanged = False
    if unchanged and all(-(2 ** 63) <= item < 2 ** 63 for item in _ints(value)):
        assert plainly_storable(value)


def _ints(value):
    items = value if isinstance(value, list) else [value]
    return [item for item in items if type(item) is int]


REGISTER_NAMES = st.lists(st.sampled_from([f"~p{n:07d}.{kind}" for n in range(70) for kind in ("as", "ue")])
                          | st.sampled_from(["queueId", "ended", "startTime"]), max_size=150)


@given(REGISTER_NAMES, st.integers(0, 69), st.sampled_from(["as", "ae", "ue"]))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_the_participant_shortcut_decides_as_the_census_does(names, participant, kind):
    registers = {name: (1, None) for name in names}
    name = f"~p{participant:07d}.{kind}"
    known = {participant_of(other) for other in registers if is_session(other)}
    census = name in registers or participant_of(name) in known or len(known) < MAX_SESSION_PARTICIPANTS
    assert _admits_participant(registers, name) == census


REGISTERS = st.tuples(st.integers(-3, 3), SCALARS | st.lists(SCALARS, max_size=2))


@given(st.dictionaries(st.sampled_from("abc"), REGISTERS), st.dictionaries(st.sampled_from("abc"), REGISTERS))
def test_joining_takes_exactly_the_registers_that_win(current, incoming):
    state = ConversationState(dict(current))
    reduce_module._join_into(state, incoming)
    for name in current.keys() | incoming.keys():
        mine, theirs = current.get(name), incoming.get(name)
        expected = theirs if mine is None or (theirs is not None and wins(theirs, mine)) else mine
        assert state.registers[name] == expected


@given(st.dictionaries(ODD_TEXT, REGISTERS, max_size=5), st.lists(st.integers(0, 2 ** 64 - 1), max_size=40),
       st.integers(0, 2 ** 40))
def test_format_1_and_format_2_values_read_as_the_same_state(registers, keys, version):
    state = ConversationState(registers, keys, version)
    format_1 = codec.dumps([version, keys, {name: [r[0], r[1]] for name, r in registers.items()}])
    assert decode_state(format_1) == decode_state(encode_state(state)) == state


# -- whole records through the engine, with every fast path on, then with none --------------------

def general_paths(monkeypatch) -> None:
    """Turn every shortcut off: each decision goes to the code the shortcut stands in front of."""
    def read_without_shortcuts(data: bytes):
        orjson.loads(data)  # what orjson refuses stays refused, as in `codec.exact_loads` (minus its digit scan)
        return json.loads(data)

    def census(registers, name):
        known = {participant_of(other) for other in registers if is_session(other)}
        return name in registers or participant_of(name) in known or len(known) < MAX_SESSION_PARTICIPANTS

    def join_by_wins(state, sets):
        result = reduce_module.Join.NOTHING
        for name, incoming in sets.items():
            current = state.registers.get(name)
            if current is None:
                state.registers[name], result = incoming, reduce_module.Join.CHANGE
            elif wins(incoming, current):
                if not reduce_module.same_value(incoming[1], current[1]):
                    result = reduce_module.Join.CHANGE
                elif result is reduce_module.Join.NOTHING:
                    result = reduce_module.Join.RESTAMP
                state.registers[name] = incoming
        return result

    monkeypatch.setattr(codec, "loads", read_without_shortcuts)
    monkeypatch.setattr(engine_module, "plainly_storable", lambda value: False)
    monkeypatch.setattr(engine_module, "_admits_participant", census)
    monkeypatch.setattr(reduce_module, "_join_into", join_by_wins)
    monkeypatch.setattr(ShardEngine, "_keep_warm", lambda self, committed: None)  # every load from RocksDB
    monkeypatch.setattr(ShardEngine, "_read_ahead", lambda self, records: None)  # each chunk reads its own
    monkeypatch.setattr(engine_module, "CHUNK_RECORDS", 10 ** 9)


def mutations() -> list:
    """What a record may be turned into: re-serialized, enlarged, odd, or poison."""
    def reordered(envelope):  # a source re-emit serialized another way: keys reversed, spaces
        def flip(value):
            return {k: flip(value[k]) for k in reversed(list(value))} if isinstance(value, dict) else value
        return json.dumps(flip(envelope), indent=1).encode()

    def body(envelope, **fields):
        envelope["detail"]["eventBody"].update(fields)
        return envelope

    def duplicate_key(envelope):  # the first queueId is overridden by the last
        text = orjson.dumps(envelope).decode()
        return text.replace('"eventBody":{', '"eventBody":{"queueId":"shadow",', 1).encode()

    return [
        lambda e: orjson.dumps(e),
        reordered,
        lambda e: codec.dumps(body(e, attributes={"account": 2 ** 70 + 1, "low": -(2 ** 63) - 1})),
        lambda e: json.dumps(body(e, wrapupCode="caf\u00e9 \U0001F600 \u2028", queueId="q\u0000"),
                             ensure_ascii=True).encode(),
        duplicate_key,
        lambda e: codec.dumps(body(e, wrapupCode=5.0, acdOutcome=2 ** 70, direction=1e300)),
        lambda e: orjson.dumps(body(e, queueId="x" * 300)),  # too long for a metrics key
        lambda e: orjson.dumps(body(e, interactingDurationMs=10 ** 16, heldDurationMs=1.5)),
        lambda e: orjson.dumps(body(e, attributes={"deep": _nested(40)})),
        lambda e: orjson.dumps(body(e, eventTime="not a time")),
        lambda e: orjson.dumps(body(e, eventTime=1000)),  # 1970: a broken clock
        lambda e: orjson.dumps(body(e, conversationId=None)),
        lambda e: b'{"detail": ',  # truncated
        lambda e: b"[1, 2]",
        lambda e: b"\xff\xfe{}",
        lambda e: orjson.dumps(e)[:-1] + b" , }",
    ]


def _nested(depth: int):
    value: object = "bottom"
    for _ in range(depth):
        value = {"d": value}
    return value


SUBTOPICS = ["customer.start", "acd.start", "user.start", "user.end", "acd.end", "acw", "customer.end", "attributes"]


def storm(seed: int, picks: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    chosen = mutations()
    events = []
    for n in range(24):
        conversation = f"c{rng.randrange(4)}"
        subtopic = rng.choice(SUBTOPICS)
        envelope = detail_event(conversation, subtopic, rng.randrange(0, 600_000, 1000), participantId=f"p{n % 3}",
                                queueId=f"q{rng.randrange(2)}", userId="u1", interactingDurationMs=rng.randrange(9),
                                attributes={"n": n})
        events.append(chosen[picks[n % len(picks)] % len(chosen)](envelope))
    repeats = [rng.choice(events) for _ in range(6)]
    return events + repeats


def run(tmp_path, name: str, lines: list[bytes], warm_states: int = engine_module.WARM_STATES, batch: int = 7):
    """Process `lines` in batches of `batch`, flushing after each, and what came of it."""
    client = MemoryDynamoDB()
    adapter = GenesysAdapter()
    shard = ShardEngine("shardId-000000000001", adapter, ShardStore(str(tmp_path / name)),
                        DynamoSink(client, "conversations", adapter.derive), DynamoDeadLetters(client, "dead-letters"),
                        FlushPolicy(max_records=10 ** 6), clock=lambda: (T0 + 3_600_000) / 1000,
                        warm_states=warm_states)
    records = [Record(line, str(n), route(adapter, line)[0], arrival_ms=T0 + 3_600_000)
               for n, line in enumerate(lines, 1)]
    for start in range(0, len(records), batch):
        shard.process(records[start:start + batch])
        shard.flush()
    shard.flush(final=True)
    store = shard._store
    states = {cid: store.get(cid) for cid in ("c0", "c1", "c2", "c3")}
    shard.close()
    letters = {key: {name: value for name, value in letter.items() if name != "receivedAt"}  # the wall clock
               for key, letter in client.items("dead-letters").items()}
    return shard.counters, states, client.items("conversations"), letters


@given(st.integers(0, 2 ** 32), st.lists(st.integers(0, 100), min_size=1, max_size=8),
       st.sampled_from([1, 2, engine_module.WARM_STATES]), st.sampled_from([1, 7, 200]),
       st.sampled_from([3, engine_module.CHUNK_RECORDS]))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_engine_with_its_shortcuts_does_what_it_does_without_them(tmp_path_factory, seed, picks, warm, batch,
                                                                      chunk):
    """`chunk`: a storm is shorter than a real chunk; small ones make its batches read ahead."""
    lines = storm(seed, picks)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(engine_module, "CHUNK_RECORDS", chunk)
        fast = run(tmp_path_factory.mktemp("fast"), "state", lines, warm, batch)
    with pytest.MonkeyPatch.context() as monkeypatch:
        general_paths(monkeypatch)
        general = run(tmp_path_factory.mktemp("general"), "state", lines, warm, batch)
    assert fast == general


def test_a_re_emit_serialized_another_way_is_an_exact_repeat():
    """The event key hashes the canonical body (DESIGN.md), so key order and spacing do not matter."""
    envelope = detail_event("c1", "acd.start", 1000, queueId="q1", participantId="p1")
    reordered = mutations()[1]
    adapter = GenesysAdapter()
    original = adapter.normalize(codec.loads(orjson.dumps(envelope)))
    again = adapter.normalize(codec.loads(reordered(envelope)))
    assert original.key == again.key and original.sets == again.sets


def test_a_conversation_back_after_its_flush_is_not_read_again_and_the_warm_states_are_bounded(tmp_path):
    store = ShardStore(str(tmp_path / "state"))
    asked: list[str] = []
    read = store.get_encoded
    store.get_encoded = lambda ids: read(asked.extend(ids) or ids)  # type: ignore[method-assign]
    shard = ShardEngine("shardId-000000000001", GenesysAdapter(), store, NullSink(),
                        JsonlDeadLetters(str(tmp_path / "letters.jsonl")), warm_states=2,
                        clock=lambda: (T0 + 3_600_000) / 1000)
    sequence = iter(range(1, 100))

    def feed(*conversations: str) -> list[str]:
        asked.clear()
        shard.process([Record(orjson.dumps(detail_event(cid, "acd.start", 1000 * n, queueId=f"q{n}")),
                              str(n), cid, arrival_ms=T0 + 3_600_000)
                       for cid, n in zip(conversations, sequence)])
        shard.flush()
        return list(asked)

    assert feed("c1", "c2") == ["c1", "c2"]
    assert feed("c1") == []  # kept from its flush
    assert feed("c3") == ["c3"]  # c2, the least recently touched, makes room
    assert feed("c2") == ["c2"]
    shard.close()


def counting_reads(client: MemoryDynamoDB) -> list[int]:
    """The number of keys of each BatchGetItem `client` answers from now on."""
    asked: list[int] = []
    read = client.batch_get_item

    def counted(**kwargs):
        asked.append(sum(len(table["Keys"]) for table in kwargs["RequestItems"].values()))
        return read(**kwargs)

    client.batch_get_item = counted  # type: ignore[method-assign]
    return asked


def store_as_opened(tmp_path, how: str) -> ShardStore:
    """A shard's store as production opens it: with RocksDB's TTL (every `processor` command), or
    reopened over files a previous process left (every KCL child after the first)."""
    path = str(tmp_path / "state")
    if how == "reopened":
        earlier = ShardStore(path)
        earlier.commit({f"old{n}": ConversationState() for n in range(500)}, "1")
        earlier.compact()
        earlier.close()
    return ShardStore(path, Settings().retention_seconds if how == "ttl" else None)


def batch_of(conversations: int, records: int, first: int = 1, name=lambda n: f"c{n}") -> list[Record]:
    return [Record(orjson.dumps(detail_event(name(n % conversations), "acd.start", 1000 + n, queueId="q")), str(n),
                   name(n % conversations), arrival_ms=T0 + 3_600_000) for n in range(first, first + records)]


@pytest.mark.parametrize("opened", ["fresh", "ttl", "reopened"])
def test_a_batch_reads_its_new_conversations_from_dynamodb_100_at_a_time_not_chunk_by_chunk(tmp_path, opened):
    """On every store production opens: a TTL store's (and a reopened one's) Bloom probe answers
    "may exist" for every key, so a read-ahead asking it would never batch a read."""
    client = MemoryDynamoDB()
    asked = counting_reads(client)
    adapter = GenesysAdapter()
    shard = ShardEngine("shardId-000000000001", adapter, store_as_opened(tmp_path, opened),
                        DynamoSink(client, "conversations", adapter.derive),
                        JsonlDeadLetters(str(tmp_path / "letters.jsonl")), clock=lambda: (T0 + 3_600_000) / 1000)
    shard.process(batch_of(150, 200))
    assert asked == [100, 50]
    assert shard.counters.conversations == 150
    shard.process(batch_of(150, 200, first=201))  # all of them known now: nothing to read
    assert asked == [100, 50]
    shard.close()


def test_a_partition_key_no_read_may_carry_is_left_to_its_chunk(tmp_path):
    """A read-ahead of a key DynamoDB refuses to read (over 2,048 bytes) would fail the whole batch;
    its record is dead-lettered in its chunk as without the read-ahead (I7). A lone surrogate cannot
    even be encoded."""
    client = MemoryDynamoDB()
    adapter = GenesysAdapter()
    shard = ShardEngine("shardId-000000000001", adapter, ShardStore(str(tmp_path / "state")),
                        DynamoSink(client, "conversations", adapter.derive),
                        JsonlDeadLetters(str(tmp_path / "letters.jsonl")), clock=lambda: (T0 + 3_600_000) / 1000)
    records = batch_of(30, 40)
    records[5] = batch_of(1, 1, name=lambda n: "x" * 3000)[0]._replace(sequence_number="6")
    records[9] = records[9]._replace(partition_key="\ud800")
    shard.process(records)
    shard.flush()
    assert shard.counters.rejected == 1 and shard.counters.conversations == 30
    assert len(client.items("conversations")) == 30
    shard.close()


def test_replay_feeds_each_shard_batches_whose_new_conversations_are_read_together(tmp_path):
    client = MemoryDynamoDB()
    asked = counting_reads(client)
    adapter = GenesysAdapter()
    lines = [record.data for record in batch_of(150, 200)]
    replay(lines, adapter, DynamoSink(client, "conversations", adapter.derive),
           JsonlDeadLetters(str(tmp_path / "letters.jsonl")))
    assert asked == [100, 50]


def test_a_dry_replay_feeds_each_shard_a_chunk_at_a_time(tmp_path, monkeypatch):
    """A dry run reads nothing: its feed keeps each line's decode (done to route it) next to its apply."""
    fed: list[int] = []
    process = ShardEngine.process
    monkeypatch.setattr(ShardEngine, "process", lambda engine, records: fed.append(len(records)) or process(engine, records))
    lines = [record.data for record in batch_of(150, 200)]
    replay(lines, GenesysAdapter(), NullSink(), JsonlDeadLetters(str(tmp_path / "letters.jsonl")))
    assert sum(fed) == 200 and max(fed) == CHUNK_RECORDS


def test_the_log_says_whether_the_hot_path_runs_compiled():
    """The KCL child's first log line (`describe_build`). This tier also runs against the image's
    compiled wheel (tests/server/test_compiled.py), where the other branch is the one taken."""
    compiled = compiled_modules()
    assert ("processor.engine" in compiled) == (not engine_module.__file__.endswith(".py"))
    if compiled:
        assert describe_build() == f"hot path compiled ({len(HOT_PATH)} of {len(HOT_PATH)} modules)"
    else:
        assert describe_build() == "hot path pure Python (not compiled)"


def test_a_module_that_did_not_compile_is_named(monkeypatch):
    """A module that fails to compile ships as its source (optional extensions): the log says which."""
    monkeypatch.setattr(runtime, "compiled_modules", lambda: [name for name in HOT_PATH if name != "processor.replay"])
    assert describe_build() == (f"hot path compiled ({len(HOT_PATH) - 1} of {len(HOT_PATH)} modules; "
                                "pure Python: processor.replay)")
