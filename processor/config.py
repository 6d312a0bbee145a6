"""Settings: one TOML file (all tables optional), environment overrides for the container. `SCHEMA`
says where each setting is read from; `Settings.to_toml` writes them back the same way.

```toml
[adapter]                 # see processor.adapters; default: Genesys Cloud topics
kind = "genesys"

[processor]
flush_records = 10000     # flush after this many records ...
flush_seconds = 1.0       # ... or this many seconds, whichever comes first
stamp_hold_seconds = 60   # a stamp advanced with no value change is written within this (I14)
retention_days = 7        # ended conversations expire locally and in DynamoDB (`_ttl`) after this
inactive_retention_days = 30  # conversations never seen to end expire this long after their last event
dead_letter_retention_days = 14  # dead letters (raw payloads: PII) expire after this
metrics_seconds = 60      # a shard writes its CloudWatch EMF line this often (and when it stops)
state_dir = "state"       # one RocksDB per shard below it

[dynamodb]
table = "conversations"
dead_letter_table = "conversation-dead-letters"
metrics_table = "conversation-metrics"
endpoint = ""             # empty: AWS; set for a local emulator

[analytics]               # queue and agent metrics (adapters with sessions: Genesys detail events)
interval_minutes = 30     # 5, 10, 15, 30 or 60, aligned to the epoch
service_level_seconds = 20  # answered within this counts towards the service level
retention_days = 400      # an interval's metrics expire this long after it (gauges never)
service_level_target_pct = 80  # `processor wallboard`: a service level % at or above this is green,
service_level_amber_band = 10  # up to this many points below it amber, lower red
[analytics.service_level_seconds_by_queue]  # per-queue targets: queueId = seconds
[analytics.service_level_target_pct_by_queue]  # per-queue service level % targets: queueId = percent

[queues]                  # display names (`processor wallboard`): queueId = "name"; others show a short id

[inspect]                 # `processor inspect` masks every projection value but these
show = ["status"]         # added to the adapter's own known non-PII fields
mask = []                 # masked even if the adapter calls them safe
```
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from processor.adapters import Adapter, build_adapter
from processor.analytics.contribution import INTERVAL_CHOICES, AnalyticsSettings
from processor.engine import FlushPolicy
from processor.dynamodb.item import Retention
from processor.dynamodb.metrics import MetricsTarget
from processor.dynamodb.sink import DynamoSink

DAY = 86_400
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Settings:
    adapter: Mapping[str, Any] = field(default_factory=dict)
    flush_records: int = 10_000
    flush_seconds: float = 1.0
    stamp_hold_seconds: float = 60.0
    retention_days: float = 7.0
    inactive_retention_days: float = 30.0
    dead_letter_retention_days: float = 14.0
    metrics_seconds: float = 60.0
    state_dir: str = "state"
    table: str = "conversations"
    dead_letter_table: str = "conversation-dead-letters"
    metrics_table: str = "conversation-metrics"
    endpoint: str | None = None
    interval_minutes: int = 30
    service_level_seconds: float = 20.0
    metrics_retention_days: float = 400.0
    service_level_seconds_by_queue: Mapping[str, float] = field(default_factory=dict)
    service_level_target_pct: float = 80.0
    service_level_amber_band: float = 10.0
    service_level_target_pct_by_queue: Mapping[str, float] = field(default_factory=dict)
    queue_names: Mapping[str, str] = field(default_factory=dict)
    inspect_show: tuple[str, ...] = ()
    inspect_mask: tuple[str, ...] = ()

    @property
    def retention_seconds(self) -> int:
        """How long local state is kept after its last write (RocksDB TTL): the longer retention."""
        return int(max(self.retention_days, self.inactive_retention_days) * DAY)

    @property
    def retention(self) -> Retention:
        return Retention(int(self.retention_days * DAY), int(self.inactive_retention_days * DAY))

    @property
    def dead_letter_retention_seconds(self) -> int:
        return int(self.dead_letter_retention_days * DAY)

    @property
    def flush_policy(self) -> FlushPolicy:
        return FlushPolicy(self.flush_records, self.flush_seconds, self.stamp_hold_seconds)

    def build_adapter(self) -> Adapter:
        return build_adapter(self.adapter)

    @property
    def analytics(self) -> AnalyticsSettings:
        return AnalyticsSettings(self.interval_minutes, self.service_level_seconds,
                                 dict(self.service_level_seconds_by_queue))

    def build_sink(self, client: Any, adapter: Adapter, table: str | None = None,
                   metrics_table: str | None = None) -> DynamoSink:
        """The production sink: conversation states, and the metrics when the adapter has sessions."""
        metrics = MetricsTarget(metrics_table or self.metrics_table, self.analytics,
                                int(self.metrics_retention_days * DAY)) if adapter.keeps_sessions else None
        return DynamoSink(client, table or self.table, adapter.derive, self.retention, metrics=metrics)

    def to_toml(self) -> str:
        """These settings as a file `load_settings` reads back to the same settings."""
        lines = _toml_table("adapter", self.adapter) if self.adapter else []
        for table in dict.fromkeys(spec.table for spec in SCHEMA):
            lines.append(f"[{table}]")
            for spec in (spec for spec in SCHEMA if spec.table == table):
                value = getattr(self, spec.field)
                if spec.key is None:  # the table itself
                    lines += _toml_table(table, value)[1:]
                elif spec.kind is dict:
                    lines += _toml_table(f"{table}.{spec.key}", value)
                elif value is not None:
                    lines.append(f"{spec.key} = {_toml_value(list(value) if spec.kind is tuple else value)}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Spec:
    """Where one setting lives: its TOML table and key (None: the whole table is the setting, a
    table of queueId = value), and the environment variable over it. A `dict` setting's values are
    of kind `values`; a number is at most `maximum` where one is given."""

    field: str
    table: str
    key: str | None
    kind: type
    environment: str | None = None
    choices: tuple[Any, ...] | None = None
    values: type = float
    maximum: float | None = None


#: every setting but the [adapter] table, the one place that says where each is read from
SCHEMA = (
    Spec("flush_records", "processor", "flush_records", int),
    Spec("flush_seconds", "processor", "flush_seconds", float),
    Spec("stamp_hold_seconds", "processor", "stamp_hold_seconds", float),
    Spec("retention_days", "processor", "retention_days", float, "PROCESSOR_RETENTION_DAYS"),
    Spec("inactive_retention_days", "processor", "inactive_retention_days", float, "PROCESSOR_INACTIVE_RETENTION_DAYS"),
    Spec("dead_letter_retention_days", "processor", "dead_letter_retention_days", float,
         "PROCESSOR_DEAD_LETTER_RETENTION_DAYS"),
    Spec("metrics_seconds", "processor", "metrics_seconds", float),
    Spec("state_dir", "processor", "state_dir", str, "PROCESSOR_STATE_DIR"),
    Spec("table", "dynamodb", "table", str, "PROCESSOR_TABLE"),
    Spec("dead_letter_table", "dynamodb", "dead_letter_table", str, "PROCESSOR_DEAD_LETTER_TABLE"),
    Spec("metrics_table", "dynamodb", "metrics_table", str, "PROCESSOR_METRICS_TABLE"),
    Spec("endpoint", "dynamodb", "endpoint", str, "PROCESSOR_DYNAMODB_ENDPOINT"),
    Spec("interval_minutes", "analytics", "interval_minutes", int, "PROCESSOR_INTERVAL_MINUTES",
         choices=INTERVAL_CHOICES),
    Spec("service_level_seconds", "analytics", "service_level_seconds", float, "PROCESSOR_SERVICE_LEVEL_SECONDS"),
    Spec("metrics_retention_days", "analytics", "retention_days", float, "PROCESSOR_METRICS_RETENTION_DAYS"),
    Spec("service_level_target_pct", "analytics", "service_level_target_pct", float,
         "PROCESSOR_SERVICE_LEVEL_TARGET_PCT", maximum=100),
    Spec("service_level_amber_band", "analytics", "service_level_amber_band", float,
         "PROCESSOR_SERVICE_LEVEL_AMBER_BAND", maximum=100),
    # last in [analytics]: sub-tables
    Spec("service_level_seconds_by_queue", "analytics", "service_level_seconds_by_queue", dict),
    Spec("service_level_target_pct_by_queue", "analytics", "service_level_target_pct_by_queue", dict, maximum=100),
    Spec("queue_names", "queues", None, dict, values=str),
    Spec("inspect_show", "inspect", "show", tuple),
    Spec("inspect_mask", "inspect", "mask", tuple),
)
TABLES = ("adapter", *dict.fromkeys(spec.table for spec in SCHEMA))
#: the tables that are one setting each, keyed by the user's own ids
WHOLE_TABLES = {spec.table for spec in SCHEMA if spec.key is None}
#: what a dict setting maps each queueId to, by the kind of its values
_TABLE_VALUES = {float: "number", str: "string"}


def load_settings(path: str | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from `path` (or none), then `PROCESSOR_*` environment variables on top."""
    document = _read(path) if path else {}
    unknown = set(document) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown settings tables: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {"adapter": document.get("adapter", {})}
    for table in set(document) - {"adapter"} - WHOLE_TABLES:
        known = {spec.key for spec in SCHEMA if spec.table == table}
        if not isinstance(document[table], dict) or set(document[table]) - known:
            unknown_keys = sorted(set(document[table]) - known) if isinstance(document[table], dict) else [table]
            raise ValueError(f"[{table}] has no setting {', '.join(unknown_keys)} (known: {', '.join(sorted(known))})")
    for spec in SCHEMA:
        table = document.get(spec.table, {})
        value = table if spec.key is None else table.get(spec.key)
        if value not in (None, ""):
            values[spec.field] = _typed(spec, value, f"[{spec.table}]" if spec.key is None else
                                        f"[{spec.table}] {spec.key}")
        if spec.environment and environ.get(spec.environment):
            values[spec.field] = _typed(spec, environ[spec.environment], spec.environment)
    settings = Settings(**values)
    settings.build_adapter()  # fail at start-up, not on the first record
    return settings


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as source:
            return tomllib.load(source)
    except FileNotFoundError:
        raise ValueError(f"settings file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"settings file {path} is not valid TOML: {error}") from None


def _typed(spec: Spec, value: Any, where: str) -> Any:
    number = _typed_value(spec, value, where)
    if spec.choices is not None and number not in spec.choices:
        raise ValueError(f"{where} must be one of {', '.join(map(str, spec.choices))}: {value!r}")
    if spec.maximum is not None and spec.kind in (int, float) and number > spec.maximum:
        raise ValueError(f"{where} must be at most {spec.maximum:g}: {value!r}")
    return number


def _typed_value(spec: Spec, value: Any, where: str) -> Any:
    if spec.kind is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a table of queueId = {_TABLE_VALUES[spec.values]}")
        item = Spec(spec.field, spec.table, spec.key, spec.values, maximum=spec.maximum)
        return {str(key): _typed(item, entry, f"{where} {key}" if spec.key is None else f"{where}.{key}")
                for key, entry in value.items()}
    if spec.kind is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{where} must be a list of field names")
        return tuple(value)
    if spec.kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string: {value!r}")
        return value
    try:
        number = spec.kind(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{where} is not a number: {value!r}") from None
    if spec.kind is int:
        if isinstance(value, bool) or number != float(value) or number < 1:
            raise ValueError(f"{where} must be a whole number of at least 1: {value!r}")
    elif isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ValueError(f"{where} must be a finite number of at least 0: {value!r}")
    return number


def _toml_table(name: str, table: Mapping[str, Any]) -> list[str]:
    lines = [f"[{name}]"]
    lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in table.items() if not isinstance(value, Mapping)]
    for key, value in table.items():
        if isinstance(value, Mapping):
            lines += _toml_table(f"{name}.{_toml_key(key)}", value)
    return lines


def _toml_key(key: str) -> str:
    """A bare key where TOML allows one (ASCII letters, digits, _ and -), else a quoted one."""
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return _toml_string(str(value))


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, and DEL escaped too (TOML forbids it raw)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
