"""The generic adapter: any source shaped alike (NICE CXone, custom buses), driven by JSONPath settings.

```toml
[adapter]
kind = "generic"
conversation_id = "$.detail.conversation_id"
event_time = "$.detail.timestamp"
event_id = "$.detail.event_id"        # optional
[adapter.state]
status = "$.detail.status"
```
The projection is exactly the `state` fields, each a last-writer-wins register by event time.
"""
from __future__ import annotations

from typing import Any, Mapping

from processor.analytics.sessions import PREFIX as SESSION_PREFIX
from processor.adapters import event_key, require_conversation_id, require_time
from processor.adapters.jsonpath import Path, compile_path
from processor.model import ConversationEvent

#: attribute names the DynamoDB item reserves for itself
RESERVED = {"conversationId", "version"}

#: EventBridge fields that differ between deliveries of the same source event
_DELIVERY_FIELDS = ("id", "time")


#: an attribute name DynamoDB accepts at the top of an item, kept short (each write repeats it)
MAX_ATTRIBUTE_NAME_BYTES = 255


class GenericAdapter:
    #: none: the configured fields are the operator's to vouch for (`[inspect] show`)
    public_fields: frozenset[str] = frozenset()
    #: no sessions: a generic source produces no queue or agent metrics
    keeps_sessions = False

    def __init__(self, conversation_id: str, event_time: str, state: Mapping[str, str], event_id: str | None = None):
        self.conversation_id_path = conversation_id
        self.event_time_path = event_time
        self._conversation_id = compile_path(conversation_id)
        self._event_time = compile_path(event_time)
        self._event_id: Path | None = compile_path(event_id) if event_id else None
        self._state = {name: compile_path(path) for name, path in state.items()}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> GenericAdapter:
        missing = [name for name in ("conversation_id", "event_time", "state") if name not in settings]
        if missing:
            raise ValueError(f"[adapter] kind = 'generic' needs {', '.join(missing)}")
        state = settings["state"]
        if not isinstance(state, Mapping) or not state:
            raise ValueError("[adapter.state] must map at least one attribute name to a JSONPath")
        bad = sorted(name for name in state if name in RESERVED or name.startswith(("_", SESSION_PREFIX)))
        if bad:
            raise ValueError(f"[adapter.state] names reserved for the item: {', '.join(bad)}")
        if any(not name or len(name.encode("utf-8")) > MAX_ATTRIBUTE_NAME_BYTES for name in state):
            raise ValueError(f"[adapter.state] attribute names must be 1 to {MAX_ATTRIBUTE_NAME_BYTES} bytes "
                             "(DynamoDB refuses an empty name)")
        return cls(settings["conversation_id"], settings["event_time"], state, settings.get("event_id"))

    def normalize(self, envelope: dict[str, Any]) -> ConversationEvent:
        conversation_id = require_conversation_id(self._conversation_id(envelope), self.conversation_id_path)
        time_ms = require_time(self._event_time(envelope), self.event_time_path)
        sets = {}
        for name, path in self._state.items():
            value = path(envelope)
            if value is not None:
                sets[name] = (time_ms, value)
        return ConversationEvent(conversation_id, self._key(envelope), "generic", time_ms, sets)

    def _key(self, envelope: dict[str, Any]) -> int:
        if self._event_id is not None:
            value = self._event_id(envelope)
            if value is not None:
                return event_key("id", value)
        body = envelope.get("detail")
        if body is None:
            body = {k: v for k, v in envelope.items() if k not in _DELIVERY_FIELDS}
        return event_key("body", body)

    def partition_key(self, envelope: dict[str, Any]) -> str:
        key = self._conversation_id(envelope)
        return key if isinstance(key, str) else ""

    def derive(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        return {}
