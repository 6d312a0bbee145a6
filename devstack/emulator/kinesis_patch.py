"""Make moto 5.2.5's Kinesis reshard the way real Kinesis does, as far as KCL needs it.

Stock moto moves records on SplitShard/MergeShards, keeps putting into the closed parent, and
never ends a closed shard, so a KCL worker can never finish a parent and start its children.
With this patch:
  * split and merge close the parent(s) and keep their records;
  * puts go only to open shards;
  * GetRecords on a closed shard, past its last record, returns no iterator and `ChildShards`
    (KCL 2.x requires them at shard end);
  * ListShards honours ShardFilter (KCL's first lease sync after a split needs it);
  * PutRecord is O(1) and GetRecords O(k) (stock moto rescans the shard on every call).
Pinned to moto==5.2.5: it touches moto internals.
"""
from __future__ import annotations

from moto.core.responses import ActionResult
from moto.kinesis import models as kinesis_models
from moto.kinesis import responses as kinesis_responses
from moto.kinesis.exceptions import InvalidArgumentError
from moto.kinesis.utils import compose_shard_iterator, decompose_shard_iterator
from moto.utilities.utils import md5_hash

Shard = kinesis_models.Shard


def _shard_for_key(self, partition_key, explicit_hash_key):
    if not isinstance(partition_key, str) or len(partition_key) > 256:
        raise InvalidArgumentError("partition_key")
    if explicit_hash_key:
        hash_key = int(explicit_hash_key)
        if hash_key >= 2 ** 128:
            raise InvalidArgumentError("explicit_hash_key")
    else:
        hash_key = int(md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= hash_key <= shard.ending_hash:
            return shard
    return None


def _next_shard_number(stream) -> int:
    return max(shard._shard_id for shard in stream.shards.values()) + 1


def _split_shard(self, shard_to_split, new_starting_hash_key):
    boundary = int(new_starting_hash_key)
    parent = self.shards[shard_to_split]
    if not parent.starting_hash < boundary < parent.ending_hash:
        raise InvalidArgumentError(message=f"bad NewStartingHashKey {boundary} for {shard_to_split}")
    if not parent.is_open:
        raise InvalidArgumentError(message=f"Shard {shard_to_split} has already been merged or split")
    number = _next_shard_number(self)
    for child in (Shard(number, parent.starting_hash, boundary - 1, parent=parent.shard_id),
                  Shard(number + 1, boundary, parent.ending_hash, parent=parent.shard_id)):
        self.shards[child.shard_id] = child
    parent.is_open = False


def _merge_shards(self, shard_to_merge, adjacent_shard_to_merge):
    first, second = self.shards[shard_to_merge], self.shards[adjacent_shard_to_merge]
    if first.ending_hash + 1 == second.starting_hash:
        low, high = first, second
    elif second.ending_hash + 1 == first.starting_hash:
        low, high = second, first
    else:
        raise InvalidArgumentError(adjacent_shard_to_merge)
    if not (first.is_open and second.is_open):
        raise InvalidArgumentError(message="shard already closed")
    child = Shard(_next_shard_number(self), low.starting_hash, high.ending_hash,
                  parent=first.shard_id, adjacent_parent=second.shard_id)
    self.shards[child.shard_id] = child
    first.is_open = second.is_open = False


def _get_records(self):
    stream_name, shard_id, last_sequence = decompose_shard_iterator(self._get_param("ShardIterator"))
    stream = self.kinesis_backend.describe_stream(stream_arn=self._get_param("StreamARN"), stream_name=stream_name)
    shard = stream.get_shard(shard_id)
    records, last_sequence, millis = shard.get_records(last_sequence, self._get_param("Limit"))
    body = {"Records": [record.to_json() for record in records], "MillisBehindLatest": millis}
    if not shard.is_open and int(last_sequence) >= shard.get_max_sequence_number():
        body["ChildShards"] = [{
            "ShardId": child.shard_id,
            "ParentShards": [p for p in (child.parent, child.adjacent_parent) if p],
            "HashKeyRange": {"StartingHashKey": str(child.starting_hash), "EndingHashKey": str(child.ending_hash)},
        } for child in stream.shards.values() if shard.shard_id in (child.parent, child.adjacent_parent)]
    else:
        body["NextShardIterator"] = compose_shard_iterator(stream_name, shard, last_sequence)
    return ActionResult(body)


def _list_shards(self):
    """ListShards honouring ShardFilter, as KCL's first lease sync relies on: at TRIM_HORIZON only
    the shards open at the trim horizon (moto never trims: those without a parent in the stream);
    their children are found through ChildShards at shard end. Stock moto returns every shard, so a
    split before the first sync leaves KCL with overlapping hash ranges, and it never starts."""
    stream = self.kinesis_backend.describe_stream(stream_arn=self._get_param("StreamARN"),
                                                   stream_name=self._get_param("StreamName"))
    shards = sorted(stream.shards.values(), key=lambda shard: shard.shard_id)
    shard_filter = self._get_param("ShardFilter") or {}
    kind = shard_filter.get("Type")
    if kind in ("AT_TRIM_HORIZON", "AT_TIMESTAMP"):
        shards = [s for s in shards if s.parent not in stream.shards and s.adjacent_parent not in stream.shards]
    elif kind == "AT_LATEST":
        shards = [s for s in shards if s.is_open]
    elif kind == "AFTER_SHARD_ID":
        shards = [s for s in shards if s.shard_id > shard_filter.get("ShardId", "")]
    return ActionResult({"Shards": [shard.to_json() for shard in shards]})


# moto numbers a shard's records 1..N consecutively, so they can be indexed directly.
def _max_sequence(self):
    return next(reversed(self.records)) if self.records else 0


def _min_sequence(self):
    return next(iter(self.records)) if self.records else 0


def _put_record(self, partition_key, data, explicit_hash_key):
    sequence = _max_sequence(self) + 1
    self.records[sequence] = kinesis_models.Record(partition_key, data, sequence, explicit_hash_key)
    return str(sequence)


def _shard_get_records(self, last_sequence_id, limit):
    last = int(last_sequence_id)
    newest = _max_sequence(self)
    limit = limit or 10000
    results = []
    sequence = max(last + 1, _min_sequence(self))
    while sequence <= newest and len(results) < limit:
        record = self.records.get(sequence)
        if record is not None:
            results.append(record)
            last = sequence
        sequence += 1
    millis = int((self.records[newest].created_at - results[-1].created_at) * 1000) if results else 0
    return results, last, millis


def apply() -> None:
    kinesis_models.Stream.get_shard_for_key = _shard_for_key
    kinesis_models.Stream.split_shard = _split_shard
    kinesis_models.Stream.merge_shards = _merge_shards
    kinesis_responses.KinesisResponse.get_records = _get_records
    kinesis_responses.KinesisResponse.list_shards = _list_shards
    Shard.get_max_sequence_number = _max_sequence
    Shard.get_min_sequence_number = _min_sequence
    Shard.put_record = _put_record
    Shard.get_records = _shard_get_records
