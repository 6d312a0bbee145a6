"""In-memory twins of the parts the unit tier may not start: a DynamoDB client with DynamoDB's
semantics for the calls the processor makes, and fault injection around the engine's parts.

`MemoryDynamoDB` answers `put_item` (the processor's version condition, `ALL_OLD` on failure),
`get_item`, `batch_get_item`, `batch_write_item`, `scan` (and its paginator), `update_item` (the
metrics directory's string-set ADDs, the writer epoch's ADD with `ReturnValues`),
`transact_write_items` (conversation Puts with their version condition and metric partial
Updates, all or nothing: at most 100 actions, one per item, `TransactionCanceledException` with
one `CancellationReasons` entry per action, the stored item for `ALL_OLD`), and the control calls
`ensure_table` makes (`describe_table`, `create_table`, `get_waiter`), with the low-level item
shapes and the `ClientError` shapes botocore raises. It refuses what real DynamoDB refuses (a
table that does not exist, an item over 400 KB, numbers out of range, nesting over 32 levels, a
key over 2,048 bytes, empty or duplicate sets, undefined or unused expression placeholders,
overlapping update paths), stricter than moto, which accepts deep nesting. So `DynamoSink`,
`DynamoDeadLetters`, `MetricsReader` and the helpers of tests/conftest.py run unchanged against it.

Expressions are the processor's, on top-level attributes named by `#placeholders`: updates of
`SET #a = :v, ...` and `ADD #n :number, #s :set, ...` (numbers added exactly as DynamoDB's
decimals, sets united; a missing item is created), conditions of `attribute_exists(#a)`,
`attribute_not_exists(#a)` and `#a = :v` joined by OR. Anything else is refused with a
ValidationException saying the twin does not support it, never guessed at.

Faults are injected by wrapping public interfaces, never by replacing private attributes:
`Faults` around a client, `DyingDeadLetters` around a dead-letter destination, `CrashingStore`
(a `ShardStore`) for the local commit. A process that dies is a `Crash`, which nothing catches.
"""
from __future__ import annotations

import copy
import itertools
import re
import threading
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any, Callable, Iterator, Mapping

from botocore.exceptions import ClientError

from processor.analytics import layout
from processor.dynamodb.item import KEY, item_size
from processor.store import ShardStore

#: the conditions the processor writes with: its version check, and a probe that never holds
VERSION_CONDITION = "attribute_not_exists(#id) OR #v = :expected"
PROBE_CONDITION = "#v = :never"
#: the tables a twin starts with (table -> key attribute), as the unit tests and the default
#: `Settings` name them (the metrics table is `Settings.metrics_table`)
TABLES = {"conversations": KEY, "dead-letters": "id", "conversation-metrics": layout.KEY}
#: DynamoDB's limits for one TransactWriteItems
MAX_TRANSACT_ACTIONS = 100
MAX_TRANSACT_BYTES = 4 * 1024 * 1024
CONDITION_FAILED = "The conditional request failed"
RETURN_VALUES = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")


def client_error(code: str, operation: str, message: str = "", **extra: Any) -> ClientError:
    status = 400 if code not in ("InternalServerError", "ServiceUnavailable") else 500
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, operation)


def invalid(operation: str, message: str) -> ClientError:
    return client_error("ValidationException", operation, message)


def unsupported(operation: str, what: str) -> ClientError:
    """What real DynamoDB may accept but this twin does not model: refused, never guessed at."""
    return invalid(operation, f"MemoryDynamoDB does not support {what}")


class MemoryDynamoDB:
    """Tables of items keyed by their string partition key; one lock, like one partition (a
    transaction is checked and applied under it: all or nothing, whatever the threads).
    `keys`: the tables that exist and their key attribute (default `TABLES`)."""

    def __init__(self, keys: Mapping[str, str] | None = None):
        self.keys = dict(TABLES if keys is None else keys)  # table -> key attribute name
        self.tables: dict[str, dict[str, dict]] = {name: {} for name in self.keys}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def table(self, name: str, operation: str) -> dict[str, dict]:
        if name not in self.tables:
            raise client_error("ResourceNotFoundException", operation, "Requested resource not found")
        return self.tables[name]

    def describe_table(self, TableName: str) -> dict:
        self.calls.append("DescribeTable")
        self.table(TableName, "DescribeTable")
        return {"Table": {"TableName": TableName, "TableStatus": "ACTIVE",
                          "KeySchema": [{"AttributeName": self.keys[TableName], "KeyType": "HASH"}]}}

    def create_table(self, TableName: str, KeySchema: list, **definition: Any) -> dict:
        self.calls.append("CreateTable")
        with self._lock:
            if TableName in self.tables:
                raise client_error("ResourceInUseException", "CreateTable", f"Table already exists: {TableName}")
            self.keys[TableName] = KeySchema[0]["AttributeName"]
            self.tables[TableName] = {}
        return self.describe_table(TableName)

    def get_waiter(self, name: str) -> Any:
        """Tables are active as soon as they are created: every waiter is already done."""
        return type("Waiter", (), {"wait": lambda self, **kwargs: None})()

    def put_item(self, TableName: str, Item: dict, ConditionExpression: str | None = None,
                 ExpressionAttributeNames: dict | None = None, ExpressionAttributeValues: dict | None = None,
                 ReturnValuesOnConditionCheckFailure: str = "NONE") -> dict:
        operation = "PutItem"
        self.calls.append(operation)
        table = self.table(TableName, operation)
        key_name = self.keys[TableName]
        expressions = Expressions(ExpressionAttributeNames, ExpressionAttributeValues, operation)
        condition = expressions.condition(ConditionExpression)
        expressions.all_used()
        _on_failure(ReturnValuesOnConditionCheckFailure, operation)
        _validate(Item, key_name, operation)  # before the condition: a put that never holds still validates
        key = Item[key_name]["S"]
        with self._lock:
            stored = table.get(key)
            if condition is not None and not condition(stored):
                raise client_error("ConditionalCheckFailedException", operation, CONDITION_FAILED,
                                   **_old(stored, ReturnValuesOnConditionCheckFailure))
            table[key] = copy.deepcopy(Item)
        return {}

    def update_item(self, TableName: str, Key: dict, UpdateExpression: str,
                    ExpressionAttributeNames: dict | None = None, ExpressionAttributeValues: dict | None = None,
                    ConditionExpression: str | None = None, ReturnValues: str = "NONE",
                    ReturnValuesOnConditionCheckFailure: str = "NONE") -> dict:
        """SET and ADD on top-level attributes, the item created when missing; `ReturnValues` as
        DynamoDB gives them (`UPDATED_NEW`: the updated attributes' new values)."""
        operation = "UpdateItem"
        self.calls.append(operation)
        table = self.table(TableName, operation)
        key_name = self.keys[TableName]
        key = _key_of(Key, key_name, operation)
        expressions = Expressions(ExpressionAttributeNames, ExpressionAttributeValues, operation)
        actions = expressions.update(UpdateExpression, key_name)
        condition = expressions.condition(ConditionExpression)
        expressions.all_used()
        if ReturnValues not in RETURN_VALUES:
            raise invalid(operation, f"ReturnValues must be one of {', '.join(RETURN_VALUES)}: {ReturnValues}")
        _on_failure(ReturnValuesOnConditionCheckFailure, operation)
        with self._lock:
            stored = table.get(key)
            if condition is not None and not condition(stored):
                raise client_error("ConditionalCheckFailedException", operation, CONDITION_FAILED,
                                   **_old(stored, ReturnValuesOnConditionCheckFailure))
            item = _updated(stored, key_name, key, actions, operation)
            table[key] = item
            return _returned(ReturnValues, stored, item, [attribute for _, attribute, _ in actions])

    def transact_write_items(self, TransactItems: list) -> dict:
        """Put and Update actions, all or nothing. The request is refused whole (ValidationException)
        for its shape: over 100 actions, two on one item, a bad expression or key, over 4 MB.
        Otherwise every action is checked against the stored items; if any fails (its condition,
        or DynamoDB refusing the item it would write) nothing is written and the transaction is
        cancelled with one reason per action, in order."""
        operation = "TransactWriteItems"
        self.calls.append(operation)
        if not 1 <= len(TransactItems) <= MAX_TRANSACT_ACTIONS:
            raise invalid(operation, "1 validation error detected: Value at 'transactItems' failed to satisfy "
                                     "constraint: Member must have length less than or equal to "
                                     f"{MAX_TRANSACT_ACTIONS} and greater than or equal to 1")
        plans = [self._plan(action, operation) for action in TransactItems]
        targets = [(plan.table, plan.key) for plan in plans]
        if len(set(targets)) != len(targets):
            raise invalid(operation, "Transaction request cannot include multiple operations on one item")
        if sum(item_size(plan.item) for plan in plans if plan.item is not None) > MAX_TRANSACT_BYTES:
            raise invalid(operation, "Transaction request cannot be larger than 4 MB")
        with self._lock:
            reasons: list[dict[str, Any]] = []
            writes: list[tuple[dict[str, dict], str, dict]] = []
            for plan in plans:
                table = self.tables[plan.table]
                stored = table.get(plan.key)
                try:
                    if plan.item is not None:
                        _validate(plan.item, plan.key_name, operation)
                    if plan.condition is not None and not plan.condition(stored):
                        reasons.append({"Code": "ConditionalCheckFailed", "Message": CONDITION_FAILED,
                                        **_old(stored, plan.on_failure)})
                        continue
                    item = (copy.deepcopy(plan.item) if plan.item is not None
                            else _updated(stored, plan.key_name, plan.key, plan.actions, operation))
                except ClientError as error:
                    if error.response["Error"]["Code"] != "ValidationException":
                        raise
                    reasons.append({"Code": "ValidationError", "Message": error.response["Error"]["Message"]})
                    continue
                reasons.append({"Code": "None"})
                writes.append((table, plan.key, item))
            codes = [reason["Code"] for reason in reasons]
            if any(code != "None" for code in codes):
                raise client_error("TransactionCanceledException", operation,
                                   "Transaction cancelled, please refer cancellation reasons for specific reasons "
                                   f"[{', '.join(codes)}]", CancellationReasons=reasons)
            for table, key, item in writes:
                table[key] = item
        return {}

    def _plan(self, action: dict, operation: str) -> "Action":
        """One action of a transaction, checked for what does not depend on the stored items."""
        if len(action) != 1:
            raise invalid(operation, "TransactItems can only contain one of Check, Put, Update or Delete")
        (kind, request), = action.items()
        if kind not in ("Put", "Update"):
            raise unsupported(operation, f"{kind} actions in a transaction (only Put and Update)")
        known = {"TableName", "ConditionExpression", "ExpressionAttributeNames", "ExpressionAttributeValues",
                 "ReturnValuesOnConditionCheckFailure", "Item" if kind == "Put" else "Key"} | (
                {"UpdateExpression"} if kind == "Update" else set())
        if set(request) - known:
            raise unsupported(operation, f"{', '.join(sorted(set(request) - known))} in a {kind} action")
        self.table(request["TableName"], operation)
        key_name = self.keys[request["TableName"]]
        expressions = Expressions(request.get("ExpressionAttributeNames"), request.get("ExpressionAttributeValues"),
                                  operation)
        item, actions = None, []
        if kind == "Put":
            item = request["Item"]
            key = _item_key(item, key_name, operation)
        else:
            key = _key_of(request["Key"], key_name, operation)
            actions = expressions.update(request["UpdateExpression"], key_name)
        condition = expressions.condition(request.get("ConditionExpression"))
        expressions.all_used()
        on_failure = request.get("ReturnValuesOnConditionCheckFailure", "NONE")
        _on_failure(on_failure, operation)
        return Action(request["TableName"], key_name, key, item, actions, condition, on_failure)

    def get_item(self, TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        self.calls.append("GetItem")
        stored = self._get(TableName, Key, "GetItem")
        return {"Item": stored} if stored is not None else {}

    def batch_get_item(self, RequestItems: dict) -> dict:
        operation = "BatchGetItem"
        self.calls.append(operation)
        if sum(len(request["Keys"]) for request in RequestItems.values()) > 100:
            raise invalid(operation, "Too many items requested for the BatchGetItem call")
        responses: dict[str, list] = {}
        for name, request in RequestItems.items():
            if set(request) - {"Keys", "ConsistentRead"}:
                raise unsupported(operation, f"{', '.join(sorted(set(request) - {'Keys', 'ConsistentRead'}))} "
                                             "in a BatchGetItem request")
            self.table(name, operation)
            keys = [_key_of(key, self.keys[name], operation) for key in request["Keys"]]
            if not keys:
                raise invalid(operation, "1 validation error detected: Value at 'requestItems.keys' failed to "
                                         "satisfy constraint: Member must have length greater than or equal to 1")
            if len(set(keys)) != len(keys):
                raise invalid(operation, "Provided list of item keys contains duplicates")
            found = (self._get(name, key, operation) for key in request["Keys"])
            responses[name] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict) -> dict:
        self.calls.append("BatchWriteItem")
        for name, requests in RequestItems.items():
            assert len(requests) <= 25
            table, key_name = self.table(name, "BatchWriteItem"), self.keys[name]
            items = [request["PutRequest"]["Item"] for request in requests]
            if len({item[key_name]["S"] for item in items}) != len(items):
                raise client_error("ValidationException", "BatchWriteItem",
                                   "Provided list of item keys contains duplicates")
            for item in items:
                _validate(item, key_name, "BatchWriteItem")
            with self._lock:
                for item in items:
                    table[item[key_name]["S"]] = copy.deepcopy(item)
        return {"UnprocessedItems": {}}

    def scan(self, TableName: str, ConsistentRead: bool = False) -> dict:
        self.calls.append("Scan")
        items = list(self.items(TableName).values())
        return {"Items": items, "Count": len(items), "ScannedCount": len(items)}

    def get_paginator(self, operation: str) -> Any:
        """The scan paginator: one page holds every item."""
        assert operation == "scan", operation
        return type("Paginator", (), {"paginate": lambda paginator, **kwargs: iter([self.scan(**kwargs)])})()

    def _get(self, table: str, key: dict, operation: str) -> dict | None:
        stored_items = self.table(table, operation)
        value = _key_of(key, self.keys[table], operation)
        with self._lock:
            stored = stored_items.get(value)
            return copy.deepcopy(stored) if stored is not None else None

    def items(self, table: str) -> dict[str, dict]:
        with self._lock:
            return copy.deepcopy(self.table(table, "Scan"))


class Action:
    """A transaction action, planned: where it writes, and what (a Put's item, or an update)."""

    def __init__(self, table: str, key_name: str, key: str, item: dict | None, actions: list,
                 condition: Callable[[dict | None], bool] | None, on_failure: str):
        self.table, self.key_name, self.key, self.item = table, key_name, key, item
        self.actions, self.condition, self.on_failure = actions, condition, on_failure


_NAME = r"#[A-Za-z0-9_]+"
_VALUE = r":[A-Za-z0-9_]+"
_TOKEN = re.compile(rf"\s*({_NAME}|{_VALUE}|[A-Za-z_][A-Za-z0-9_]*|\S)")
_TERM = re.compile(rf"\s*(?:attribute_(?P<negated>not_)?exists\s*\(\s*(?P<probed>{_NAME})\s*\)"
                   rf"|(?P<compared>{_NAME})\s*=\s*(?P<value>{_VALUE}))\s*")
_CLAUSES = ("SET", "ADD", "REMOVE", "DELETE")
_TYPE_NAMES = {"S": "STRING", "B": "BINARY", "BOOL": "BOOLEAN", "NULL": "NULL", "M": "MAP", "L": "LIST"}


class Expressions:
    """The placeholders of one request (or one action of a transaction): resolved as the
    expressions use them, refused when undefined, unused or invalid, as DynamoDB refuses them."""

    def __init__(self, names: Mapping[str, str] | None, values: Mapping[str, dict] | None, operation: str):
        self.operation = operation
        for given, what in ((names, "ExpressionAttributeNames"), (values, "ExpressionAttributeValues")):
            if given is not None and not given:
                raise invalid(operation, f"{what} must not be empty")
        self.names, self.values = dict(names or {}), dict(values or {})
        for placeholder, value in self.values.items():
            try:
                _validate_value(value, 1, operation)
            except ClientError as error:
                raise invalid(operation, "ExpressionAttributeValues contains invalid value: "
                                         f"{error.response['Error']['Message']} for key {placeholder}") from None
        self._used: set[str] = set()

    def name(self, token: str) -> str:
        if token not in self.names:
            raise invalid(self.operation, "An expression attribute name used in the document path is not defined; "
                                          f"attribute name: {token}")
        self._used.add(token)
        return self.names[token]

    def value(self, token: str) -> dict:
        if token not in self.values:
            raise invalid(self.operation, "An expression attribute value used in expression is not defined; "
                                          f"attribute value: {token}")
        self._used.add(token)
        return self.values[token]

    def all_used(self) -> None:
        for given, what in ((self.names, "ExpressionAttributeNames"), (self.values, "ExpressionAttributeValues")):
            unused = sorted(set(given) - self._used)
            if unused:
                raise invalid(self.operation, f"Value provided in {what} unused in expressions: "
                                              f"keys: {{{', '.join(unused)}}}")

    def condition(self, expression: str | None) -> Callable[[dict | None], bool] | None:
        """A condition on the stored item (None: there is none): terms joined by OR."""
        if expression is None:
            return None
        terms: list[tuple[str, str, dict | None]] = []
        for text in re.split(r"\s+OR\s+", expression, flags=re.IGNORECASE):
            term = _TERM.fullmatch(text)
            if term is None:
                raise unsupported(self.operation, f"the condition {expression!r} (only attribute_exists(#a), "
                                                  "attribute_not_exists(#a) and #a = :v, joined by OR)")
            if term["probed"]:
                terms.append(("absent" if term["negated"] else "present", self.name(term["probed"]), None))
            else:
                terms.append(("equal", self.name(term["compared"]), self.value(term["value"])))

        def holds(stored: dict | None) -> bool:
            for test, attribute, value in terms:
                present = stored.get(attribute) if stored is not None else None
                if (test == "absent" and present is None or test == "present" and present is not None
                        or test == "equal" and present is not None and _equal(present, value)):
                    return True
            return False

        return holds

    def update(self, expression: str, key_name: str) -> list[tuple[str, str, dict]]:
        """The (clause, attribute, operand) of `SET #a = :v, ... ADD #n :v, ...`, in order."""
        operation = self.operation
        tokens = _TOKEN.findall(expression)
        if not tokens:
            raise invalid(operation, "Invalid UpdateExpression: The expression can not be empty;")
        if "".join(tokens) != re.sub(r"\s+", "", expression):
            raise unsupported(operation, f"the UpdateExpression {expression!r}")

        def refuse(token: str) -> ClientError:
            return unsupported(operation, f"{token!r} in the UpdateExpression {expression!r} (only SET #a = :v "
                                          "and ADD #a :v, on top-level attributes)")

        actions: list[tuple[str, str, dict]] = []
        clauses: set[str] = set()
        position = 0

        def take(pattern: str) -> str:
            nonlocal position
            if position >= len(tokens) or not re.fullmatch(pattern, tokens[position]):
                raise refuse(tokens[position] if position < len(tokens) else "the end")
            position += 1
            return tokens[position - 1]

        while position < len(tokens):
            clause = tokens[position].upper()
            if clause not in _CLAUSES:
                raise invalid(operation, f'Invalid UpdateExpression: Syntax error; token: "{tokens[position]}"')
            if clause in ("REMOVE", "DELETE"):
                raise refuse(tokens[position])
            if clause in clauses:
                raise invalid(operation, f'Invalid UpdateExpression: The "{clause}" section can only be used once '
                                         "in an update expression;")
            clauses.add(clause)
            position += 1
            while True:
                attribute = self.name(take(_NAME))
                if clause == "SET":
                    take("=")
                operand = self.value(take(_VALUE))
                if attribute == key_name:
                    raise invalid(operation, f"One or more parameter values were invalid: Cannot update attribute "
                                             f"{key_name}. This attribute is part of the key")
                if any(attribute == earlier for _, earlier, _ in actions):
                    raise invalid(operation, "Invalid UpdateExpression: Two document paths overlap with each other; "
                                             "must remove or rewrite one of these paths; "
                                             f"path one: [{attribute}], path two: [{attribute}]")
                (kind, _), = operand.items()
                if clause == "ADD" and kind not in ("N", "SS", "NS", "BS"):
                    raise invalid(operation, "Invalid UpdateExpression: Incorrect operand type for operator or "
                                             f"function; operator: ADD, operand type: {_TYPE_NAMES[kind]}")
                actions.append((clause, attribute, operand))
                if position < len(tokens) and tokens[position] == ",":
                    position += 1
                    continue
                if position < len(tokens) and tokens[position].upper() not in _CLAUSES:
                    raise refuse(tokens[position])
                break
        return actions


def _key_of(key: Any, key_name: str, operation: str) -> str:
    """The string partition key a request's `Key` names, refused as DynamoDB refuses it."""
    if not isinstance(key, Mapping) or set(key) != {key_name} or set(key[key_name]) != {"S"}:
        raise invalid(operation, "The provided key element does not match the schema")
    value = key[key_name]["S"]
    if value == "":
        raise invalid(operation, "One or more parameter values are not valid. The AttributeValue for a key "
                                 f"attribute cannot contain an empty string value. Key: {key_name}")
    if len(value.encode("utf-8")) > 2048:
        raise invalid(operation, "One or more parameter values were invalid: Size of hashkey has exceeded the "
                                 "maximum size limit of2048 bytes")
    return value


def _item_key(item: dict, key_name: str, operation: str) -> str:
    """The string partition key of an item to put."""
    if key_name not in item:
        raise invalid(operation, f"One or more parameter values were invalid: Missing the key {key_name} in the item")
    (kind, value), = item[key_name].items()
    if kind != "S":
        raise invalid(operation, f"One or more parameter values were invalid: Type mismatch for key {key_name} "
                                 f"expected: S actual: {kind}")
    if value == "":
        raise invalid(operation, "One or more parameter values are not valid. The AttributeValue for a key "
                                 f"attribute cannot contain an empty string value. Key: {key_name}")
    return value


def _on_failure(return_values: str, operation: str) -> None:
    if return_values not in ("NONE", "ALL_OLD"):
        raise invalid(operation, "ReturnValuesOnConditionCheckFailure must be NONE or ALL_OLD: " + str(return_values))


def _old(stored: dict | None, return_values: str) -> dict[str, Any]:
    """What a failed condition hands back: the stored item, for ALL_OLD, when there is one."""
    return {"Item": copy.deepcopy(stored)} if return_values == "ALL_OLD" and stored is not None else {}


def _returned(return_values: str, stored: dict | None, item: dict, updated: list[str]) -> dict[str, Any]:
    """An UpdateItem's response for its `ReturnValues` (no `Attributes` when there are none)."""
    if return_values == "NONE":
        return {}
    if return_values in ("ALL_OLD", "UPDATED_OLD"):
        source, names = stored or {}, (stored or {}).keys() if return_values == "ALL_OLD" else updated
    else:
        source, names = item, item.keys() if return_values == "ALL_NEW" else updated
    attributes = {name: copy.deepcopy(source[name]) for name in names if name in source}
    return {"Attributes": attributes} if attributes else {}


def _updated(stored: dict | None, key_name: str, key: str, actions: list[tuple[str, str, dict]],
             operation: str) -> dict:
    """The item after an update (a new one, created with its key, if none is stored); refused as
    DynamoDB refuses it (an ADD on another type, a result DynamoDB cannot store)."""
    item = copy.deepcopy(stored) if stored is not None else {key_name: {"S": key}}
    for clause, attribute, operand in actions:
        item[attribute] = copy.deepcopy(operand) if clause == "SET" else _added(item.get(attribute), operand, operation)
    _validate(item, key_name, operation)
    return item


def _added(present: dict | None, operand: dict, operation: str) -> dict:
    """ADD: a number summed exactly (absent counts as 0), a set united (absent counts as empty)."""
    (kind, amount), = operand.items()
    if present is None:
        return {"N": _number_text(Decimal(amount))} if kind == "N" else copy.deepcopy(operand)
    (present_kind, value), = present.items()
    if present_kind != kind:
        raise invalid(operation, "An operand in the update expression has an incorrect data type")
    if kind == "N":
        with localcontext() as context:
            context.prec = 400  # exact for any two numbers DynamoDB stores (1E-130 to under 1E+126)
            return {"N": _number_text(Decimal(value) + Decimal(amount))}
    if kind == "NS":
        members = {Decimal(member) for member in value}
        return {"NS": list(value) + [m for m in amount if Decimal(m) not in members]}
    return {kind: list(value) + [member for member in amount if member not in value]}


def _number_text(number: Decimal) -> str:
    """A number as DynamoDB returns it: no exponent, no trailing zeros ("3", not "3.0" or "3E+0")."""
    if number == 0:
        return "0"
    with localcontext() as context:
        context.prec = 400
        return format(number.normalize(), "f")


def _equal(present: dict, expected: dict) -> bool:
    """DynamoDB's `=`: same type, numbers by value, sets as sets."""
    (kind, value), = present.items()
    (expected_kind, expected_value), = expected.items()
    if kind != expected_kind:
        return False
    if kind == "N":
        return Decimal(value) == Decimal(expected_value)
    if kind == "NS":
        return {Decimal(v) for v in value} == {Decimal(v) for v in expected_value}
    if kind in ("SS", "BS"):
        return set(value) == set(expected_value)
    return value == expected_value


class Crash(Exception):
    """The process died here: raised by a fault wrapper; nothing in the processor catches it."""


class Faults:
    """Wraps a client: `before(operation, kwargs)` may raise a fault before the call goes through."""

    def __init__(self, client: Any, before: Callable[[str, dict], None]):
        self._client = client
        self._before = before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._before(name, kwargs)
            return method(*args, **kwargs)

        return call


def crash_after(calls: int, operation: str, armed: Callable[[], bool] = lambda: True) -> Callable[[str, dict], None]:
    """A `Faults` hook: the process dies at the call of `operation` that follows the first `calls`
    made while `armed()` (the writers are threads: some calls got through, the rest never will)."""
    made: Iterator[int] = itertools.count()

    def before(name: str, kwargs: dict) -> None:
        if name == operation and armed() and next(made) >= calls:
            raise Crash(f"died at {operation} number {calls + 1}")

    return before


class DyingDeadLetters:
    """A dead-letter destination (`processor.deadletters.DeadLetters`) whose `flush` dies while
    `armed()`: the crash after the DynamoDB writes, before the rest of the flush."""

    def __init__(self, letters: Any, armed: Callable[[], bool] = lambda: True):
        self._letters = letters
        self._armed = armed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._letters, name)

    def flush(self) -> None:
        if self._armed():
            raise Crash("died before the dead letters were flushed")
        self._letters.flush()


class CrashingStore(ShardStore):
    """A shard's RocksDB whose `commit` writes, then dies while `armed()`: the crash between the
    local commit and the KCL checkpoint."""

    def __init__(self, path: str, armed: Callable[[], bool] = lambda: True, **options: Any):
        super().__init__(path, **options)
        self._armed = armed

    def commit(self, *args: Any, **kwargs: Any) -> None:
        super().commit(*args, **kwargs)
        if self._armed():
            raise Crash("died after the local commit")


def _validate(item: dict, key_name: str, operation: str) -> None:
    """Refuse what DynamoDB refuses, with its error shape."""
    if len(_item_key(item, key_name, operation).encode("utf-8")) > 2048:
        raise client_error("ValidationException", operation, "Size of hashkey has exceeded the maximum size limit")
    if item_size(item) > 400 * 1024:
        raise client_error("ValidationException", operation, "Item size has exceeded the maximum allowed size")
    for value in item.values():
        _validate_value(value, 1, operation)


_SET_NAMES = {"SS": "string", "NS": "number", "BS": "binary"}


def _validate_value(attribute: dict, depth: int, operation: str) -> None:
    (kind, value), = attribute.items()
    if kind == "N":
        _validate_number(value, operation)
    elif kind in _SET_NAMES:
        if not value:
            raise client_error("ValidationException", operation, "One or more parameter values were invalid: "
                               f"An {_SET_NAMES[kind]} set  may not be empty")
        members = [Decimal(_validate_number(v, operation)) for v in value] if kind == "NS" else list(value)
        if len(set(members)) != len(members):
            raise client_error("ValidationException", operation, "One or more parameter values were invalid: "
                               f"Input collection {value} contains duplicates.")
    elif kind in ("M", "L"):
        if depth > 32:
            raise client_error("ValidationException", operation, "Nesting Levels have exceeded supported limits")
        if kind == "M" and "" in value:
            raise client_error("ValidationException", operation, "One or more parameter values were invalid: "
                               "Empty attribute name")
        for inner in (value.values() if kind == "M" else value):
            _validate_value(inner, depth + 1, operation)


def _validate_number(text: str, operation: str) -> str:
    try:
        number = Decimal(text).copy_abs()  # exact: abs() would round to the context's 28 digits
    except (InvalidOperation, TypeError, ValueError):
        number = None
    if number is None or not number.is_finite():
        raise client_error("ValidationException", operation, "A value provided cannot be converted into a number")
    if number >= Decimal("1E+126"):
        raise client_error("ValidationException", operation, "Number overflow")
    if number and number < Decimal("1E-130"):
        raise client_error("ValidationException", operation, "Number underflow")
    if len("".join(map(str, number.as_tuple().digits)).strip("0")) > 38:  # exact (normalize() rounds to 28)
        raise client_error("ValidationException", operation, "Attempting to store more than 38 significant digits")
    return text
