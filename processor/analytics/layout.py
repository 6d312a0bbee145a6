"""The metrics table: write-sharded partial cells, and the directory their readers follow (I13).

One partition key per (cell, shard, writer, slot), no sort key:
- partial  `<cell>#<shard>#<writer>.<slot>`: metric sums ADDed by one shard's transactions; `writer`
  (`w0`..`w3`, from an epoch counted in `w|<shard>` by each process that writes for the shard)
  tells consecutive owners apart (a zombie that lost the lease and its successor never share a key),
  `slot` numbers the transactions of one flush that touch the cell, so each key is written at most
  once per flush of one shard, whatever one queue's event rate, and only ever by one worker;
- directory `d|<interval>|<shard>|<bucket>` (`d|gauge|<shard>|<bucket>`): the partials a shard
  created for an interval, spread over 8 buckets by a hash of the cell (an item holds 400 KB: some
  4,000 partials of UUID-named cells each, 32,000 an interval and shard; each bucket a flush touches
  is one more write, so more buckets cost small flushes dearly), a string set ADDed before the transactions that create them (a listed
  partial that a crash never created reads as zero);
- shard days `s|<shard>`: the days (UTC) a shard has directories for, the interval width they
  were written with (a reader with another width would miss intervals: it is refused);
- day intervals `i|<shard>|<day>`: the intervals of that day the shard has directories for;
- registry `r|<n>` (16 of them, by a hash of the shard id): the shards that ever wrote metrics.
Readers sum partials over every suffix they find by following registry → days → directories; never an
item keyed by a bare queue id.
"""
from __future__ import annotations

import zlib
from typing import Any, Iterable, Mapping

from processor.analytics.contribution import AGENT, GAUGE, QUEUE, Cell, interval_text

KEY = "pk"
TTL = "_ttl"
PARTS, DAYS, SHARDS, INTERVALS, WIDTH, EPOCH = "parts", "days", "shards", "intervals", "intervalMinutes", "epoch"
#: writer names per shard, reused cyclically: consecutive owners never share one
WRITERS = 4
REGISTRY_BUCKETS = 16
DIRECTORY_BUCKETS = 8
_KIND_LETTER = {QUEUE: "q", AGENT: "a", GAUGE: "g"}
_KIND_OF_LETTER = {f"{letter}|": kind for kind, letter in _KIND_LETTER.items()}
#: the attribute naming a cell's owner, by kind
OWNER_NAME = {QUEUE: "queueId", AGENT: "userId", GAUGE: "queueId"}


def _escaped(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C").replace("#", "%23")


def cell_key(cell: Cell) -> str:
    interval = interval_text(cell.interval) if cell.interval is not None else ""
    return "|".join((_KIND_LETTER[cell.kind], _escaped(cell.owner), _escaped(cell.media_type or ""), interval))


def kind_of(key: str) -> str | None:
    """The kind of cell a cell or partial key names (None: not such a key)."""
    return _KIND_OF_LETTER.get(key[:2])


def partial_key(cell: Cell, shard_id: str, slot: str) -> str:
    """`slot`: the writer and the slot number, `<writer>.<n>`."""
    return f"{cell_key(cell)}#{shard_id}#{slot}"


def directory_name(cell: Cell) -> str:
    """Which directory lists this cell's partials: its interval's, or the gauges'."""
    return interval_text(cell.interval) if cell.interval is not None else "gauge"


def directory_key(name: str, shard_id: str, bucket: int) -> str:
    return f"d|{name}|{shard_id}|{bucket}"


def directory_keys(name: str, shard_id: str) -> list[str]:
    """Every directory item of one interval (or the gauges) of one shard."""
    return [directory_key(name, shard_id, bucket) for bucket in range(DIRECTORY_BUCKETS)]


def directory_of(cell: Cell, shard_id: str) -> str:
    """The directory item that lists this cell's partials of one shard."""
    return directory_key(directory_name(cell), shard_id, zlib.crc32(cell_key(cell).encode("utf-8")) % DIRECTORY_BUCKETS)


def shard_key(shard_id: str) -> str:
    return f"s|{shard_id}"


def epoch_key(shard_id: str) -> str:
    return f"w|{shard_id}"


def day_key(shard_id: str, day: str) -> str:
    return f"i|{shard_id}|{day}"


def shard_days(shard_id: str, days: Iterable[str], interval_minutes: int) -> dict[str, Any]:
    """UpdateItem arguments adding days to a shard's item, with the interval width written: only
    if it is the width already there (intervals of two widths would be summed as one)."""
    arguments = set_addition(shard_key(shard_id), DAYS, days)
    arguments["UpdateExpression"] += " SET #width = :width"
    arguments["ConditionExpression"] = "attribute_not_exists(#width) OR #width = :width"
    arguments["ExpressionAttributeNames"]["#width"] = WIDTH
    arguments["ExpressionAttributeValues"][":width"] = {"N": str(interval_minutes)}
    return arguments


def registry_key(shard_id: str) -> str:
    return f"r|{zlib.crc32(shard_id.encode('utf-8')) % REGISTRY_BUCKETS}"


def registry_keys() -> list[str]:
    return [f"r|{n}" for n in range(REGISTRY_BUCKETS)]


def day_of(interval: str) -> str:
    return interval[:10]


def partial_update(table: str, cell: Cell, amounts: Mapping[str, int], shard_id: str, slot: str,
                   expires_at: int | None) -> dict[str, Any]:
    """A TransactWriteItems Update that adds `amounts` to one partial (creating it named)."""
    names: dict[str, str] = {"#kind": "kind", "#owner": OWNER_NAME[cell.kind], "#shard": "shard"}
    values: dict[str, Any] = {":kind": {"S": cell.kind}, ":owner": {"S": cell.owner}, ":shard": {"S": shard_id}}
    sets = ["#kind = :kind", "#owner = :owner", "#shard = :shard"]
    if cell.media_type is not None:
        names["#media"], values[":media"] = "mediaType", {"S": cell.media_type}
        sets.append("#media = :media")
    if cell.interval is not None:
        names["#interval"], values[":interval"] = "interval", {"S": interval_text(cell.interval)}
        sets.append("#interval = :interval")
    if expires_at is not None:
        names["#ttl"], values[":ttl"] = TTL, {"N": str(expires_at)}
        sets.append("#ttl = :ttl")
    adds = []
    for n, (metric, amount) in enumerate(amounts.items()):
        names[f"#m{n}"], values[f":m{n}"] = metric, {"N": str(amount)}
        adds.append(f"#m{n} :m{n}")
    expression = "SET " + ", ".join(sets) + (" ADD " + ", ".join(adds) if adds else "")
    return {"Update": {"TableName": table, "Key": {KEY: {"S": partial_key(cell, shard_id, slot)}},
                       "UpdateExpression": expression, "ExpressionAttributeNames": names,
                       "ExpressionAttributeValues": values}}


def set_addition(key: str, attribute: str, members: Iterable[str], expires_at: int | None = None) -> dict[str, Any]:
    """UpdateItem arguments that add members to a string set (idempotent: a replay adds nothing)."""
    arguments: dict[str, Any] = {"Key": {KEY: {"S": key}}, "UpdateExpression": "ADD #set :members",
                                 "ExpressionAttributeNames": {"#set": attribute},
                                 "ExpressionAttributeValues": {":members": {"SS": sorted(set(members))}}}
    if expires_at is not None:
        arguments["UpdateExpression"] += " SET #ttl = :ttl"
        arguments["ExpressionAttributeNames"]["#ttl"] = TTL
        arguments["ExpressionAttributeValues"][":ttl"] = {"N": str(expires_at)}
    return arguments
