"""The in-memory twin's writes for the metrics (tests/twins.py): TransactWriteItems with the
conversation Puts and the partial Updates, UpdateItem's ADDs to numbers and string sets, and the
metrics table read back. The calls the twin shares with DynamoDB run on moto in-process too (the
`client` fixture), so the twin's answers are held to a second implementation; what moto does not
model as DynamoDB does (a refused item cancels a transaction; DynamoDB's number form) is checked
on the twin alone. Last, the processor end to end on the twin: a sink built from the default
`Settings`, a shard of Genesys detail events, and the metrics `MetricsReader` finds."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from devstack.storm import StormShape, storm
from processor.adapters.genesys import GenesysAdapter
from processor.analytics import layout
from processor.analytics.contribution import contribution
from processor.analytics.reader import MetricsReader, rows_of
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.client import ensure_tables
from processor.dynamodb.item import KEY, VERSION, from_item, unwrap
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from processor.store import ShardStore
from tests.twins import TABLES, Crash, Faults, MemoryDynamoDB, crash_after

CONVERSATIONS, METRICS = "conversations", Settings().metrics_table
SHARD = "shardId-000000000000"


@pytest.fixture(params=["twin", "moto"])
def client(request) -> Iterator[Any]:
    """The twin, or moto in-process (no server) with the same tables."""
    if request.param == "twin":
        yield MemoryDynamoDB()
        return
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        real = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")
        ensure_tables(real, CONVERSATIONS, metrics_table=METRICS)
        yield real


def put(cid: str, version: int, return_old: bool = True, **attributes: Any) -> dict[str, Any]:
    """The sink's transaction Put: the item at `version`, conditional on `version - 1` stored."""
    item = {KEY: {"S": cid}, VERSION: {"N": str(version)}, **attributes}
    action = {"TableName": CONVERSATIONS, "Item": item,
              "ConditionExpression": "attribute_not_exists(#id) OR #v = :expected",
              "ExpressionAttributeNames": {"#id": KEY, "#v": VERSION},
              "ExpressionAttributeValues": {":expected": {"N": str(version - 1)}}}
    if return_old:
        action["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return {"Put": action}


def partial(key: str, **amounts: int | str) -> dict[str, Any]:
    """A partial Update shaped as `layout.partial_update` shapes it: SET the cell's names, ADD the sums."""
    names = {"#kind": "kind", "#owner": "queueId", "#shard": "shard", "#ttl": layout.TTL}
    values: dict[str, Any] = {":kind": {"S": "queue"}, ":owner": {"S": "q1"}, ":shard": {"S": SHARD},
                              ":ttl": {"N": "1800000000"}}
    adds = []
    for n, (metric, amount) in enumerate(amounts.items()):
        names[f"#m{n}"], values[f":m{n}"] = metric, {"N": str(amount)}
        adds.append(f"#m{n} :m{n}")
    expression = "SET #kind = :kind, #owner = :owner, #shard = :shard, #ttl = :ttl ADD " + ", ".join(adds)
    return {"Update": {"TableName": METRICS, "Key": {layout.KEY: {"S": key}}, "UpdateExpression": expression,
                       "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}}


def stored(client: Any, table: str, key: str) -> dict[str, Any] | None:
    """The item at `key`, in plain values (numbers compared as numbers: "3" and "3.0" alike)."""
    item = client.get_item(TableName=table, Key={TABLES[table]: {"S": key}}, ConsistentRead=True).get("Item")
    return unwrap(item) if item is not None else None


def cancellation(error: pytest.ExceptionInfo[ClientError]) -> list[dict[str, Any]]:
    assert error.value.response["Error"]["Code"] == "TransactionCanceledException"
    return error.value.response["CancellationReasons"]


def add_members(client: Any, key: str, members: list[str], expires_at: int | None = None) -> dict[str, Any]:
    return client.update_item(TableName=METRICS, **layout.set_addition(key, layout.PARTS, members, expires_at))


# ---- on both the twin and moto -------------------------------------------------------------------

def test_a_transaction_applies_every_put_and_every_add(client):
    client.transact_write_items(TransactItems=[put("c1", 1, status={"S": "queued"}), put("c2", 1),
                                               partial("q|a#s#w0.0", offered=2, waitMs=1500),
                                               partial("q|b#s#w0.0", offered=1)])
    assert stored(client, CONVERSATIONS, "c1") == {KEY: "c1", VERSION: 1, "status": "queued"}
    assert stored(client, CONVERSATIONS, "c2") == {KEY: "c2", VERSION: 1}
    assert stored(client, METRICS, "q|a#s#w0.0") == {
        layout.KEY: "q|a#s#w0.0", "kind": "queue", "queueId": "q1", "shard": SHARD, layout.TTL: 1800000000,
        "offered": 2, "waitMs": 1500}
    assert stored(client, METRICS, "q|b#s#w0.0")["offered"] == 1

    client.transact_write_items(TransactItems=[put("c1", 2), partial("q|a#s#w0.0", offered=3, waitMs=-500)])
    assert stored(client, CONVERSATIONS, "c1") == {KEY: "c1", VERSION: 2}  # a Put replaces the item
    partial_a = stored(client, METRICS, "q|a#s#w0.0")
    assert (partial_a["offered"], partial_a["waitMs"]) == (5, 1000)


def test_a_failed_version_condition_cancels_the_whole_transaction(client):
    client.transact_write_items(TransactItems=[put("c1", 1), partial("q|a#s#w0.0", offered=1)])
    client.transact_write_items(TransactItems=[put("c1", 2, status={"S": "answered"})])
    before = stored(client, METRICS, "q|a#s#w0.0")

    with pytest.raises(ClientError) as error:  # a writer that last saw version 0 of c1
        client.transact_write_items(TransactItems=[put("c2", 1), put("c1", 1), partial("q|a#s#w0.0", offered=7)])
    assert cancellation(error) == [
        {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
         "Item": {KEY: {"S": "c1"}, VERSION: {"N": "2"}, "status": {"S": "answered"}}},
        {"Code": "None"}]
    assert "[None, ConditionalCheckFailed, None]" in error.value.response["Error"]["Message"]
    assert stored(client, CONVERSATIONS, "c2") is None  # nothing of it was written
    assert stored(client, METRICS, "q|a#s#w0.0") == before
    assert stored(client, CONVERSATIONS, "c1")[VERSION] == 2

    with pytest.raises(ClientError) as error:  # without ALL_OLD, the reason has no item
        client.transact_write_items(TransactItems=[put("c1", 1, return_old=False)])
    assert cancellation(error) == [{"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}]


def test_two_actions_on_one_item_or_over_100_actions_are_refused_whole(client):
    for actions in ([put("c1", 1), partial("q|a#s#w0.0", offered=1), partial("q|a#s#w0.0", offered=1)],
                    [put("c1", 1), put("c1", 1)],
                    [partial(f"q|{n}#s#w0.0", offered=1) for n in range(101)]):
        with pytest.raises(ClientError) as error:
            client.transact_write_items(TransactItems=actions)
        assert error.value.response["Error"]["Code"] == "ValidationException"
        assert "CancellationReasons" not in error.value.response
    assert stored(client, CONVERSATIONS, "c1") is None
    assert stored(client, METRICS, "q|a#s#w0.0") is None and stored(client, METRICS, "q|0#s#w0.0") is None


def test_add_accumulates_across_calls(client):
    """The writer epoch (`MetricsWriter.writer`): ADD 1 from nothing, the new value handed back."""
    epochs = []
    for _ in range(3):
        response = client.update_item(TableName=METRICS, Key={layout.KEY: {"S": layout.shard_key(SHARD)}},
                                      UpdateExpression="ADD #epoch :one",
                                      ExpressionAttributeNames={"#epoch": layout.EPOCH},
                                      ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
        epochs.append(int(response["Attributes"][layout.EPOCH]["N"]))
    assert epochs == [1, 2, 3]
    for amount in (5, -2, 10):
        client.transact_write_items(TransactItems=[partial("a|agent#s#w1.0", handled=amount)])
    assert stored(client, METRICS, "a|agent#s#w1.0")["handled"] == 13


def test_adding_to_a_string_set_is_idempotent(client):
    add_members(client, "d|gauge|s|0", ["p1", "p2"])
    add_members(client, "d|gauge|s|0", ["p2", "p1"])  # a replay adds nothing
    assert stored(client, METRICS, "d|gauge|s|0") == {layout.KEY: "d|gauge|s|0", layout.PARTS: ["p1", "p2"]}
    add_members(client, "d|gauge|s|0", ["p3", "p1"], expires_at=1900000000)  # `ADD ... SET #ttl = :ttl`
    add_members(client, "d|gauge|s|0", ["p3"], expires_at=1900000000)
    assert stored(client, METRICS, "d|gauge|s|0") == {layout.KEY: "d|gauge|s|0", layout.PARTS: ["p1", "p2", "p3"],
                                                      layout.TTL: 1900000000}
    days = layout.shard_days(SHARD, ["2026-01-01"], 30)  # `ADD #set :members SET #width = :width`
    client.update_item(TableName=METRICS, **days)
    client.update_item(TableName=METRICS, **days)
    assert stored(client, METRICS, layout.shard_key(SHARD)) == {
        layout.KEY: layout.shard_key(SHARD), layout.DAYS: ["2026-01-01"], layout.WIDTH: 30}


def test_the_metrics_table_reads_back_in_one_consistent_batch(client):
    client.update_item(TableName=METRICS, **layout.set_addition("r|3", layout.SHARDS, [SHARD]))
    client.transact_write_items(TransactItems=[partial("q|a#s#w0.0", offered=4)])
    keys = ["r|3", "q|a#s#w0.0", "absent"]
    response = client.batch_get_item(RequestItems={METRICS: {"Keys": [{layout.KEY: {"S": k}} for k in keys],
                                                             "ConsistentRead": True}})
    items = {item[layout.KEY]["S"]: item for item in response["Responses"][METRICS]}
    assert not response["UnprocessedKeys"]
    assert set(items) == {"r|3", "q|a#s#w0.0"}
    assert items["r|3"][layout.SHARDS] == {"SS": [SHARD]}
    assert unwrap(items["q|a#s#w0.0"])["offered"] == 4


# ---- the twin alone: what moto models otherwise, and the twin's own promises ---------------------

def test_numbers_are_added_exactly_and_returned_in_dynamodb_form():
    client = MemoryDynamoDB()
    for amount in ("0.1", "0.2", "1.70", "12345678901234567890123456789012345678"):  # 38 digits
        client.transact_write_items(TransactItems=[partial("q|a#s#w0.0", ratio=amount)])
    assert client.tables[METRICS]["q|a#s#w0.0"]["ratio"] == {"N": "12345678901234567890123456789012345680"}
    client.transact_write_items(TransactItems=[partial("q|b#s#w0.0", offered="2.50"),
                                               partial("q|c#s#w0.0", offered="-1")])
    client.transact_write_items(TransactItems=[partial("q|b#s#w0.0", offered="0.5"),
                                               partial("q|c#s#w0.0", offered="1")])
    assert client.tables[METRICS]["q|b#s#w0.0"]["offered"] == {"N": "3"}  # not "3.0"
    assert client.tables[METRICS]["q|c#s#w0.0"]["offered"] == {"N": "0"}
    with pytest.raises(ClientError, match="38 significant digits"):  # DynamoDB's precision, refused not rounded
        client.update_item(TableName=METRICS, Key={layout.KEY: {"S": "q|a#s#w0.0"}}, UpdateExpression="ADD #r :r",
                           ExpressionAttributeNames={"#r": "ratio"}, ExpressionAttributeValues={":r": {"N": "0.5"}})


def test_a_transaction_of_100_actions_is_accepted():
    client = MemoryDynamoDB()
    client.transact_write_items(TransactItems=[put("c1", 1)] + [partial(f"q|{n}#s#w0.0", offered=1) for n in range(99)])
    assert len(client.tables[METRICS]) == 99 and len(client.tables[CONVERSATIONS]) == 1


def test_an_item_dynamodb_refuses_cancels_the_transaction_with_a_validation_error():
    client = MemoryDynamoDB()
    client.tables[METRICS]["q|a#s#w0.0"] = {layout.KEY: {"S": "q|a#s#w0.0"}, "offered": {"S": "not a number"}}
    with pytest.raises(ClientError) as error:
        client.transact_write_items(TransactItems=[put("c1", 1, blob={"S": "x" * 410_000}), put("c2", 1),
                                                   partial("q|a#s#w0.0", offered=1)])
    assert cancellation(error) == [
        {"Code": "ValidationError", "Message": "Item size has exceeded the maximum allowed size"},
        {"Code": "None"},
        {"Code": "ValidationError", "Message": "An operand in the update expression has an incorrect data type"}]
    assert client.tables[CONVERSATIONS] == {}


@pytest.mark.parametrize("expression, values", [
    ("REMOVE #a", {}),
    ("SET #a = if_not_exists(#a, :v)", {":v": {"N": "1"}}),
    ("SET #a = #a + :v", {":v": {"N": "1"}}),
    ("SET plain = :v", {":v": {"N": "1"}}),
    ("SET #a.inner = :v", {":v": {"N": "1"}}),
    ("DELETE #a :v", {":v": {"SS": ["x"]}}),
    ("SET #a = :v ADD #a :v", {":v": {"N": "1"}}),  # two paths overlap
    ("SET #a = :v SET #a = :v", {":v": {"N": "1"}}),  # a section used twice
    ("ADD #a :v", {":v": {"S": "text"}}),  # ADD takes numbers and sets only
    ("ADD #a :v", {":v": {"SS": []}}),  # no empty set
    ("ADD #a :v", {":v": {"N": "1"}, ":unused": {"N": "2"}}),
    ("ADD #a :undefined", {":v": {"N": "1"}}),
    ("ADD #pk :v", {":v": {"N": "1"}}),  # the key
])
def test_what_the_twin_does_not_model_or_dynamodb_refuses_is_a_validation_exception(expression, values):
    client = MemoryDynamoDB()
    names = {name: {"#pk": layout.KEY}.get(name, "a") for name in ("#a", "#pk") if name in expression}
    arguments = {"UpdateExpression": expression, **({"ExpressionAttributeNames": names} if names else {}),
                 **({"ExpressionAttributeValues": values} if values else {})}
    with pytest.raises(ClientError) as error:
        client.update_item(TableName=METRICS, Key={layout.KEY: {"S": "k"}}, **arguments)
    assert error.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as error:
        client.transact_write_items(TransactItems=[{"Update": {"TableName": METRICS, "Key": {layout.KEY: {"S": "k"}},
                                                               **arguments}}])
    assert error.value.response["Error"]["Code"] == "ValidationException"  # refused whole: no cancellation
    assert client.tables[METRICS] == {}


def test_transactions_from_many_threads_are_each_all_or_nothing():
    """The sink runs transactions from a pool: every ADD counted once, every conflict whole."""
    client = MemoryDynamoDB()
    won: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        try:  # each thread claims version 1 of "c" (one wins) and adds to a shared partial
            client.transact_write_items(TransactItems=[put("c", 1, writer={"N": str(n)}),
                                                       partial(f"q|{n}#s#w0.0", offered=1)])
        except ClientError as error:
            assert error.response["Error"]["Code"] == "TransactionCanceledException"
        else:
            with lock:
                won.append(n)
        client.transact_write_items(TransactItems=[put(f"own-{n}", 1), partial("q|shared#s#w0.0", offered=1)])

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(writer, range(64)))
    assert len(won) == 1
    assert [key for key in client.tables[METRICS] if key != "q|shared#s#w0.0"] == [f"q|{won[0]}#s#w0.0"]
    assert client.tables[METRICS]["q|shared#s#w0.0"]["offered"] == {"N": "64"}
    assert client.tables[CONVERSATIONS]["c"]["writer"] == {"N": str(won[0])}


def test_faults_wrap_the_new_calls():
    client = Faults(MemoryDynamoDB(), crash_after(1, "transact_write_items"))
    add_members(client, "r|0", [SHARD])
    client.transact_write_items(TransactItems=[put("c1", 1)])
    with pytest.raises(Crash):
        client.transact_write_items(TransactItems=[put("c1", 2)])
    assert stored(client, CONVERSATIONS, "c1")[VERSION] == 1


def test_the_default_tables_include_the_default_metrics_table():
    assert TABLES[Settings().metrics_table] == layout.KEY
    assert MemoryDynamoDB().describe_table(TableName=METRICS)["Table"]["KeySchema"] == [
        {"AttributeName": layout.KEY, "KeyType": "HASH"}]


# ---- the processor end to end on the twin --------------------------------------------------------

def run_shard(client: Any, root: Any, stream: list[Record]) -> ShardEngine:
    """One worker with the production sink (`Settings().build_sink`) applies `stream` and hands off."""
    sink = Settings().build_sink(client, GenesysAdapter())
    store = ShardStore(str(root / "rocksdb"))
    engine = ShardEngine(SHARD, GenesysAdapter(), store, sink, JsonlDeadLetters(str(root / "dead-letters.jsonl")),
                         FlushPolicy(max_records=40, max_seconds=10 ** 9))
    try:
        for start in range(0, len(stream), 40):
            engine.process(stream[start:start + 40])
            engine.flush()
        engine.flush(final=True)
    finally:
        sink.close()
        engine.close()
    return engine


def contribution_rows(client: MemoryDynamoDB) -> list[dict[str, Any]]:
    """I12: the stored conversations' contributions, summed per cell in the reader's row form."""
    settings = Settings().analytics
    return rows_of(contribution(from_item(item)[1].registers, settings) for item in client.tables[CONVERSATIONS].values())


def test_the_processor_writes_metrics_the_reader_finds(tmp_path):
    """Genesys detail events with their participantIds (devstack/storm.py), through a sink built
    from the default Settings on the twin: the reader finds the metrics, and they are the stored
    conversations' contributions (I12); a new owner replaying the shard from scratch (its
    transactions cancelled on stale versions, merged, retried) changes none of them."""
    stream = [Record(line, str(1000 + n), "pk") for n, line in enumerate(storm(StormShape(conversations=12, seed=11)))]
    client = MemoryDynamoDB()
    engine = run_shard(client, tmp_path / "first", stream)
    assert engine.counters.rejected == 0
    rows = MetricsReader(client, METRICS, Settings().interval_minutes).rows()
    assert rows and {row["kind"] for row in rows} >= {"queue", "agent"}
    assert rows == contribution_rows(client)
    assert client.calls.count("TransactWriteItems") > 0 and client.calls.count("UpdateItem") > 0

    run_shard(client, tmp_path / "second", stream)  # a fresh disk: every conversation rehydrated
    assert MetricsReader(client, METRICS, Settings().interval_minutes).rows() == rows
