"""The KCL record processor: one shard lease, spoken to by the MultiLangDaemon over stdin/stdout.

stdout is the protocol channel (I11): nothing here prints; logs go to stderr. KCL is checkpointed
only with what a completed flush returns (I4).

amazon_kclpy's dispatcher catches any exception a hook raises, logs it and reports the action done,
which would silently skip a batch. So every hook here turns an unexpected error into a loud exit
(status 1): KCL sees the child die, the lease is released, and the shard is retried from its last
checkpoint instead of being wedged or losing records.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from typing import Any, Callable, TypeVar

from amazon_kclpy import kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor

from processor.config import Settings, load_settings
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.engine import ShardEngine
from processor.metrics import COUNTER_METRICS, SINK_METRICS, FlushMetrics
from processor.model import Record
from processor.runtime import describe_build
from processor.dynamodb.client import data_plane_client
from processor.store import ShardStore, shard_directory

log = logging.getLogger("processor.kcl")
F = TypeVar("F", bound=Callable[..., Any])

CHECKPOINT_ATTEMPTS = 5
#: a previous child of this worker for the same shard may still be closing its RocksDB
STORE_LOCK_WAIT_SECONDS = 30.0


def fatal_on_error(hook: F) -> F:
    """Exit the child non-zero on any unexpected error (see the module docstring)."""

    @functools.wraps(hook)
    def guarded(self: ShardProcessor, *args: Any) -> Any:
        try:
            return hook(self, *args)
        except SystemExit:
            raise
        except Exception:  # noqa: BLE001 - anything unexpected must stop this shard loudly
            log.critical("shard %s: %s failed; exiting so KCL retries from the last checkpoint",
                         self.shard_id, hook.__name__, exc_info=True)
            raise SystemExit(1)

    return guarded  # type: ignore[return-value]


class ShardProcessor(processor.RecordProcessorBase):
    """initialize → process_records* → one of lease_lost / shard_ended / shutdown_requested."""

    def __init__(self, settings: Settings, dynamodb: Callable[[Settings], Any] | None = None):
        """`dynamodb`: makes the DynamoDB client from the settings (default: the data-plane client
        for `settings.endpoint`, credentials from the standard chain; the sink and the dead
        letters make data-plane calls only, so boto3's client would do as well)."""
        self.settings = settings
        self._dynamodb = dynamodb or (lambda chosen: data_plane_client(chosen.endpoint))
        self.shard_id = "?"
        self.engine: ShardEngine | None = None
        self._store: ShardStore | None = None
        self._checkpointed: str | None = None
        self._metrics: FlushMetrics | None = None
        self._millis_behind_latest: int | None = None

    @fatal_on_error
    def initialize(self, initialize_input: Any) -> None:
        self.shard_id = initialize_input.shard_id
        settings = self.settings
        client = self._dynamodb(settings)
        adapter = settings.build_adapter()
        checkpoint = initialize_input.sequence_number
        self._store = ShardStore.rebuilt_if_foreign(shard_directory(settings.state_dir, self.shard_id),
                                                    settings.retention_seconds, STORE_LOCK_WAIT_SECONDS, log.warning)
        local = self._store.last_sequence
        if not self._store.is_current_for(checkpoint):
            # Another worker took the shard past what this disk knows (the lease came back), or
            # nothing proves otherwise: state is read back from DynamoDB as conversations return (I14).
            log.warning("shard %s: local state at sequence %s is not current for KCL checkpoint %s; dropped",
                        self.shard_id, local, checkpoint)
            self._store.reset()
        self.engine = ShardEngine(self.shard_id, adapter, self._store,
                                  settings.build_sink(client, adapter),
                                  DynamoDeadLetters(client, settings.dead_letter_table,
                                                    settings.dead_letter_retention_seconds),
                                  settings.flush_policy, checkpoint=checkpoint)
        self._checkpointed = checkpoint
        self._metrics = FlushMetrics(self.shard_id, interval_seconds=settings.metrics_seconds)
        log.info("shard %s: initialized at KCL checkpoint %s, local sequence %s, %d conversations held",
                 self.shard_id, checkpoint, self.engine.committed_sequence, self.engine.held)

    @fatal_on_error
    def process_records(self, process_records_input: Any) -> None:
        engine = self._engine()
        self._millis_behind_latest = process_records_input.millis_behind_latest
        engine.process([Record(r.binary_data, r.sequence_number, r.partition_key, arrival_ms=r.timestamp_millis)
                        for r in process_records_input.records])
        if engine.flush_due():
            self._checkpoint(process_records_input.checkpointer, self._flush())
        elif self._metrics is not None and self._metrics.due():
            self._report(None, final=False)

    @fatal_on_error
    def lease_lost(self, lease_lost_input: Any) -> None:
        """Another worker owns the shard now: drop the buffer, do not checkpoint."""
        if self.engine is None:
            return  # already flushed and closed (KCL follows a graceful shutdown with lease_lost)
        self.engine.discard()
        self._report(None, final=True)  # what this child did (writes issued, throttles) still counts
        log.info("shard %s: lease lost; unflushed changes dropped (the new owner replays them)", self.shard_id)
        self._close()

    @fatal_on_error
    def shard_ended(self, shard_ended_input: Any) -> None:
        """A reshard closed this shard: flush (held stamps too), then checkpoint with no argument
        (SHARD_END): the children rehydrate from DynamoDB."""
        self._flush(final=True)
        self._checkpoint(shard_ended_input.checkpointer, None, shard_end=True)
        log.info("shard %s: shard ended; children take over", self.shard_id)
        self._close()

    @fatal_on_error
    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        """The worker is stopping gracefully: flush (held stamps too) and checkpoint, so the next
        owner starts there and needs nothing only this process knew."""
        self._checkpoint(shutdown_requested_input.checkpointer, self._flush(final=True))
        log.info("shard %s: shutdown requested; flushed and checkpointed", self.shard_id)
        self._close()

    def _engine(self) -> ShardEngine:
        if self.engine is None:
            raise RuntimeError("record processor used before initialize")
        return self.engine

    def _flush(self, final: bool = False) -> str | None:
        """Flush and note it in the metrics (`final`: the shard stops here, so the line is written now)."""
        engine = self._engine()
        started = time.perf_counter()
        sequence = engine.flush(final=final)
        self._report((time.perf_counter() - started) * 1000, final)
        return sequence

    def _report(self, flush_latency_ms: float | None, final: bool) -> None:
        """Hand this child's running totals to the EMF metrics: production telemetry, and the only
        place the local stack learns progress and counts from (it reads the daemon's log)."""
        engine = self._engine()
        if self._metrics is None:
            return  # not initialized: nothing counted yet
        counters, sink = engine.counters, engine.sink.counters
        totals = {metric: getattr(counters, name) for name, metric in COUNTER_METRICS.items()}
        totals.update({metric: getattr(sink, name) for name, metric in SINK_METRICS.items()})
        self._metrics.record(totals, flush_latency_ms, self._millis_behind_latest, final,
                             gauges={"Held": engine.held})

    def _checkpoint(self, checkpointer: Any, sequence: str | None, shard_end: bool = False) -> None:
        """Checkpoint as KCL documents: retry throttling, stop on shutdown, report invalid state.

        `sequence` None: nothing may be checkpointed yet (a held stamp precedes every record), unless
        `shard_end`, where `checkpoint()` with no argument is what KCL requires."""
        if not shard_end and (sequence is None or sequence == self._checkpointed):
            return
        for attempt in range(CHECKPOINT_ATTEMPTS):
            try:
                checkpointer.checkpoint(sequence)
                self._checkpointed = sequence
                return
            except CheckpointError as error:
                if error.value == "ShutdownException":
                    log.info("shard %s: checkpoint refused, the worker is shutting down", self.shard_id)
                    return
                if error.value == "ThrottlingException" and attempt < CHECKPOINT_ATTEMPTS - 1:
                    time.sleep(0.2 * 2 ** attempt)
                    continue
                if error.value == "InvalidStateException":
                    log.error("shard %s: checkpoint in invalid state (lease table problem)", self.shard_id)
                raise

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self.engine = None


def run_child(config: str | None = None) -> int:
    """The KCL child's entry point (`processor kcl`): logs to stderr, protocol on stdin/stdout."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("record processor starting: %s", describe_build())
    kcl.KCLProcess(ShardProcessor(load_settings(config))).run()
    return 0
