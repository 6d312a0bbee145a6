"""Settings: one TOML file (all tables optional), environment overrides for the container.

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
state_dir = "state"       # one RocksDB per shard below it

[dynamodb]
table = "conversations"
dead_letter_table = "conversation-dead-letters"
endpoint = ""             # empty: AWS; set for a local emulator

[inspect]                 # `processor inspect` masks every projection value but these
show = ["status"]         # added to the adapter's own known non-PII fields
mask = []                 # masked even if the adapter calls them safe
```
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from processor.adapters import Adapter, build_adapter
from processor.engine import FlushPolicy
from processor.dynamodb.item import Retention

DAY = 86_400


@dataclass(frozen=True)
class Settings:
    adapter: Mapping[str, Any] = field(default_factory=dict)
    flush_records: int = 10_000
    flush_seconds: float = 1.0
    stamp_hold_seconds: float = 60.0
    retention_days: float = 7.0
    inactive_retention_days: float = 30.0
    dead_letter_retention_days: float = 14.0
    state_dir: str = "state"
    table: str = "conversations"
    dead_letter_table: str = "conversation-dead-letters"
    endpoint: str | None = None
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


def load_settings(path: str | None = None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from `path` (or none), then `PROCESSOR_*` environment variables on top."""
    document: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as source:
                document = tomllib.load(source)
        except FileNotFoundError:
            raise ValueError(f"settings file not found: {path}") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"settings file {path} is not valid TOML: {error}") from None
    unknown = set(document) - {"adapter", "processor", "dynamodb", "inspect"}
    if unknown:
        raise ValueError(f"unknown settings tables: {', '.join(sorted(unknown))}")
    processor, dynamodb = document.get("processor", {}), document.get("dynamodb", {})
    values: dict[str, Any] = {"adapter": document.get("adapter", {})}
    for name in ("flush_records", "flush_seconds", "stamp_hold_seconds", "retention_days", "inactive_retention_days",
                 "dead_letter_retention_days", "state_dir"):
        if name in processor:
            values[name] = processor[name]
    for name in ("show", "mask"):
        fields = document.get("inspect", {}).get(name, [])
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"[inspect] {name} must be a list of field names")
        values[f"inspect_{name}"] = tuple(fields)
    for name in ("table", "dead_letter_table", "endpoint"):
        if dynamodb.get(name):
            values[name] = dynamodb[name]
    overrides = {"PROCESSOR_TABLE": "table", "PROCESSOR_DEAD_LETTER_TABLE": "dead_letter_table",
                 "PROCESSOR_STATE_DIR": "state_dir", "PROCESSOR_DYNAMODB_ENDPOINT": "endpoint"}
    for variable, name in overrides.items():
        if environ.get(variable):
            values[name] = environ[variable]
    days = {"PROCESSOR_RETENTION_DAYS": "retention_days", "PROCESSOR_INACTIVE_RETENTION_DAYS": "inactive_retention_days",
            "PROCESSOR_DEAD_LETTER_RETENTION_DAYS": "dead_letter_retention_days"}
    for variable, name in days.items():
        if environ.get(variable):
            try:
                values[name] = float(environ[variable])
            except ValueError:
                raise ValueError(f"{variable} is not a number: {environ[variable]!r}") from None
    settings = Settings(**values)
    settings.build_adapter()  # fail at start-up, not on the first record
    return settings
