"""I15 in pure functions: what DynamoDB can store, exact JSON, and fitting an item into 400 KB."""
from __future__ import annotations

import enum
import json
from decimal import Decimal

import orjson
import pytest
from boto3.dynamodb.types import TypeSerializer
from hypothesis import given, settings, strategies as st

from processor import codec
from processor.adapters.genesys import GenesysAdapter
from processor.dynamodb.item import (Retention, fitted_item, from_item, item_size, number, serialize, size_bound,
                                     to_item)
from processor.limits import (EARLIEST_EVENT_MS, ITEM_BUDGET_BYTES, MAX_DEPTH, MAX_NAME_BYTES, Unstorable,
                              check_event_time, check_partition_key, oversized_fields, plainly_storable, storable)
from processor.reduce import ConversationState, canonical, same_value

derive = GenesysAdapter().derive


@pytest.mark.parametrize("value, reason", [
    (1e300, "beyond DynamoDB's range"), (-(10 ** 126), "beyond DynamoDB's range"), (1e-131, "below DynamoDB's range"),
    (float("nan"), "not finite"), (float("inf"), "not finite"), (10 ** 38 + 1, "more than 38 significant digits"),
    ({"a": [1, {"b": 1e300}]}, "beyond DynamoDB's range"), (b"bytes", "not a DynamoDB value"),
    ({"": "x"}, "empty map key"), ({"a": [{"b": 1, "": None}]}, "empty map key"),
    ({"k" * MAX_NAME_BYTES: 1}, "map key of 64 KB"), ({"é" * (MAX_NAME_BYTES // 2): 1}, "map key of 64 KB"),
])
def test_what_dynamodb_refuses_is_named(value, reason):
    with pytest.raises(Unstorable, match=reason):
        storable(value)


def test_map_keys_are_attribute_names_to_dynamodb():
    """Not empty, under 64 KB: DynamoDB refuses a whole write for one such key at any depth ("Empty
    attribute name"), and the local emulator stored it and then failed every read of the table."""
    longest = {"é" * (MAX_NAME_BYTES // 2 - 1) + "k": 1}  # 65,535 bytes
    assert storable(longest) is longest and not plainly_storable(longest)  # too long to wave through
    assert plainly_storable({"a": "x", "b": 1}) and not plainly_storable({"": "x"})


def test_nesting_is_limited_to_dynamodbs_32_levels():
    def nested(depth):
        value = "leaf"
        for _ in range(depth):
            value = {"n": value}
        return value
    assert storable(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    with pytest.raises(Unstorable, match="nested deeper"):
        storable(nested(MAX_DEPTH + 1))
    with pytest.raises(Unstorable, match="nested deeper"):
        storable(nested(200))  # deep enough for botocore's recursion limit: caught before, not by it


def test_numbers_take_the_form_dynamodb_stores():
    """DynamoDB stores 5.0 as 5: a rehydrated value must compare equal to the local one."""
    assert storable(5.0) == 5 and type(storable(5.0)) is int
    assert storable({"a": [2.0, 2.5, 10 ** 37]}) == {"a": [2, 2.5, 10 ** 37]}
    assert storable(1e20) == 10 ** 20
    for text in ("5", "5.0", "5E+0", "0.50E1"):
        assert number(text) == 5 and type(number(text)) is int
    assert number("1E+20") == 10 ** 20 and number("0.1") == 0.1 and number("-1.5E-7") == -1.5e-7


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.text(max_size=5) | st.integers(-(10 ** 30), 10 ** 30)
                    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e100, max_value=1e100),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=8))
def test_a_storable_value_survives_dynamodb_and_rocksdb_unchanged(value):
    """The round trips a value makes (item attribute, JSON in RocksDB) give back the same value."""
    try:
        value = storable(value)
    except Unstorable:
        return
    back = from_item({"conversationId": {"S": "c"}, "x": serialize(value), "_t": {"M": {"x": {"N": "1"}}}})[1]
    assert same_value(back.registers["x"][1], value) and canonical(back.registers["x"][1]) == canonical(value)
    assert codec.loads(codec.dumps(value)) == value


def as_boto3_would(attribute):
    """An AttributeValue with its numbers as Decimals (boto3 writes `1.5E-7` where we write `1.5e-07`)."""
    (kind, value), = attribute.items()
    if kind == "N":
        return {"N": Decimal(value)}
    if kind == "M":
        return {"M": {k: as_boto3_would(v) for k, v in value.items()}}
    if kind == "L":
        return {"L": [as_boto3_would(v) for v in value]}
    return attribute


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.text(max_size=5) | st.integers(-(10 ** 37), 10 ** 37)
                    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30),
                    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8))
def test_values_serialize_as_boto3s_serializer_writes_them(value):
    """boto3's own TypeSerializer is the reference for every storable value (floats given to it as
    the Decimals of their repr, as it takes no float; kept under 1e30, where boto3's 38-digit
    context would refuse 1e38 as the integer of 39 digits that DynamoDB itself accepts)."""
    try:
        value = storable(value)
    except Unstorable:
        return
    reference = TypeSerializer().serialize(json.loads(codec.dumps(value), parse_float=Decimal))
    assert as_boto3_would(serialize(value)) == as_boto3_would(reference)


def test_subclasses_of_the_json_types_serialize_by_what_they_are():
    """The fast path goes by exact type; a bool (an int to Python), an enum or a str subclass takes
    the general checks and comes out as before."""
    class Code(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 3

    assert serialize(True) == {"BOOL": True} and serialize(None) == {"NULL": True}
    assert serialize(Code("x")) == {"S": "x"} and serialize(Level.HIGH) == {"N": "3"}
    assert serialize({Level.HIGH: [False, 2.5, b"k"]}) == {"M": {str(Level.HIGH): {"L": [
        {"BOOL": False}, {"N": "2.5"}, {"B": b"k"}]}}}


def test_json_keeps_integers_beyond_64_bits():
    """orjson alone reads 100000000000000000001 as 1e20: a silent wrong value."""
    data = b'{"account": 100000000000000000001, "small": 7, "f": 2.5}'
    assert orjson.loads(data)["account"] != 100000000000000000001
    assert codec.loads(data) == {"account": 100000000000000000001, "small": 7, "f": 2.5}
    assert codec.dumps({"b": 2 ** 70, "a": 1}, sort_keys=True) == b'{"a":1,"b":1180591620717411303424}'
    for bad in (b'{"a": NaN, "b": 100000000000000000001}', b"[1e400, 100000000000000000001]", b"{oops"):
        with pytest.raises(orjson.JSONDecodeError):  # the fallback accepts nothing orjson refuses
            codec.loads(bad)
    assert codec.loads(b'["12345678901234567890123"]') == json.loads(b'["12345678901234567890123"]')


def test_event_times_outside_a_sane_window_are_refused():
    arrival = 1_767_225_600_000
    assert check_event_time(arrival, arrival) is None
    assert check_event_time(arrival + 86_400_000, arrival) is None  # a day of clock skew is fine
    assert "more than a day after" in check_event_time(arrival + 86_400_001, arrival)
    assert "before 2000" in check_event_time(EARLIEST_EVENT_MS - 1, arrival)
    assert "before 2000" in check_event_time(1_767_225_600, arrival)  # seconds, not milliseconds
    assert check_partition_key("k" * 2048) is None and "2048 bytes" in check_partition_key("é" * 1025)


def test_the_largest_fields_go_first_until_the_item_fits():
    assert oversized_fields({"a": 100, "b": 300, "c": 300}, 50, budget=400) == ["b", "c"]
    assert oversized_fields({"a": 100, "b": 300}, 50, budget=449) == ["b"]
    assert oversized_fields({"a": 100}, 50, budget=400) == []


def test_an_item_over_400_kb_keeps_everything_but_its_largest_field():
    big = "x" * 230_000
    state = ConversationState({"attributes": (2000, {"notes": big}), "wrapupCode": (3000, big + "y" * 100),
                               "queueId": (4000, "Q1"), "startTime": (-1000, 1000)}, [1])
    item, size, dropped = fitted_item("c1", state, 1, derive, None)
    assert [name for name, _ in dropped] == ["wrapupCode"]
    assert dropped[0][1] == (3000, big + "y" * 100)
    assert size == item_size(item) <= ITEM_BUDGET_BYTES
    assert item["wrapupCode"] == {"NULL": True} and item["_t"]["M"]["wrapupCode"] == {"N": "3000"}  # stamp kept
    assert state.registers["wrapupCode"] == (3000, None)  # local state equals the item
    assert item["queueId"] == {"S": "Q1"} and item["attributes"]["M"]["notes"]["S"] == big


_ATTRIBUTE_VALUES = st.recursive(
    st.builds(lambda text: {"S": text}, st.text(max_size=8))
    | st.builds(lambda number: {"N": number}, st.integers(-(10 ** 40), 10 ** 40).map(str)
                | st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.just("0") | st.just("-0.000120"))
    | st.builds(lambda data: {"B": data}, st.binary(max_size=10))
    | st.booleans().map(lambda flag: {"BOOL": flag}) | st.just({"NULL": True})
    | st.builds(lambda texts: {"SS": texts}, st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True))
    | st.builds(lambda blobs: {"BS": blobs}, st.lists(st.binary(max_size=4), min_size=1, max_size=3, unique=True)),
    lambda inner: st.builds(lambda values: {"L": values}, st.lists(inner, max_size=4))
    | st.builds(lambda values: {"M": values}, st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), _ATTRIBUTE_VALUES, min_size=1, max_size=5))
def test_the_cheap_size_bound_is_never_below_the_size_dynamodb_counts(item):
    """`fitted_item` skips the exact size when the bound is under the limit: a bound below the
    exact size would let an oversized item through."""
    assert size_bound(item) >= item_size(item)


def test_a_fitted_item_reports_a_size_no_smaller_than_its_own():
    state = ConversationState({"queueId": (4000, "Q\u00e9\U0001f600"), "startTime": (-1000, 10 ** 30)}, [1, 2])
    item, size, dropped = fitted_item("c1", state, 1, derive, None)
    assert size >= item_size(item) and not dropped


def test_every_item_expires_ended_after_its_end_others_after_their_last_event():
    retention = Retention(ended_seconds=100, inactive_seconds=1000)
    ended = ConversationState({"ended": (9000, True), "endTime": (9000, 9000),
                               "startTime": (-1000, 1000), "wrapupCode": (12_000, "X")})
    assert to_item("c", ended, 1, derive, retention)["_ttl"] == {"N": str(9 + 100)}
    open_ = ConversationState({"queueId": (5000, "Q"), "startTime": (-1000, 1000)})
    assert to_item("c", open_, 1, derive, retention)["_ttl"] == {"N": str(5 + 1000)}  # a lost end event


def test_a_whole_float_is_the_decimal_it_is_written_as():
    """1e40 has one significant digit in DynamoDB; the binary double behind it has 41 digits."""
    assert storable(1e40) == 10 ** 40 and storable(1e23) == 10 ** 23
    assert storable(1.5e125) == 15 * 10 ** 124 and storable(-2e30) == -2 * 10 ** 30
    assert storable(9.99e125) == 999 * 10 ** 123


def test_nineteen_digit_integers_below_minus_two_to_the_63_stay_exact():
    assert codec.loads(b"[-9223372036854775809, 9223372036854775808]") == [-(2 ** 63) - 1, 2 ** 63]


def test_an_item_with_only_a_start_time_expires_too():
    retention = Retention(ended_seconds=100, inactive_seconds=1000)
    started = ConversationState({"startTime": (-7000, 7000)})  # e.g. customer.start alone
    assert to_item("c", started, 1, derive, retention)["_ttl"] == {"N": str(7 + 1000)}
