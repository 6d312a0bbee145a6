"""DynamoDB's data plane at a fraction of boto3's client CPU (issue 12).

boto3 spends 1 to 3 ms of client CPU on a conditional PutItem, nearly all of it in generic
machinery the hot path does not need: parameter validation, model-driven serialization and
parsing, event hooks, and an HTTP stack (urllib3 over http.client, with two writes per request
and headers parsed by the email package). `DataPlaneClient` makes the six calls the processor
makes per flush (PutItem, GetItem, BatchGetItem, BatchWriteItem, UpdateItem, TransactWriteItems)
with the same keyword arguments, responses and errors as boto3, and little else:

* the body is the caller's arguments as JSON (orjson), bytes as base64;
* SigV4 is signed by the AWS CRT (`awscrt`, the signer botocore itself uses with its `crt` extra),
  with botocore's credentials: the standard provider chain, refreshed as botocore refreshes it;
* the request goes out in one write on a pooled keep-alive HTTP/1.1 connection (`Pool`), and
  the response is read by a small reader of our own (status, headers, Content-Length or chunked):
  urllib3 alone cost 0.45 ms of CPU per request here, http.client 0.15 ms, this 0.04 ms.

`bench/client_cpu.py` measures both clients side by side (0.13 to 0.21 ms per request against an
instant peer where boto3 takes 1.2 to 2.5 ms; a 100-item BatchGetItem 2.1 ms against 27 ms).

What boto3 knows stays boto3's: region and endpoint resolution (a botocore client made once, see
`processor.dynamodb.client.data_plane_client`), the error classes and the modeled fields of each
error (`ModeledErrors`, from botocore's service model). Responses carry `ResponseMetadata` as
boto3's do, binary attributes (`B`, `BS`) come back as bytes, numbers stay strings. Dropped
connections and timeouts raise botocore's connection errors, which `processor.dynamodb.retry`
retries.

Left out on purpose: client-side parameter validation (DynamoDB validates: a malformed call fails
as ValidationException or SerializationException instead of ParamValidationError), `B`/`BS` given
as str (boto3 encodes a str as UTF-8; here binary values must be bytes, as boto3 returns them),
botocore's own retries (off in this project, yet boto3 still reports a retryable error as having
"reached max retries"; here `RetryAttempts` is 0 and the message plain), HTTP proxies (the factory
hands out boto3's client where one is configured), and account-based endpoints (the regional
endpoint serves every account).
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import select
import socket
import ssl
from collections import deque
from typing import Any, Iterator, Mapping, NamedTuple
from urllib.parse import urlsplit

import orjson
from awscrt import auth as crt_auth, http as crt_http
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                                 NoCredentialsError, ReadTimeoutError, SSLError)
from botocore.parsers import ResponseParserError

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
USER_AGENT = "conversation-state-processor/dataplane awscrt"
#: as `processor.dynamodb.client.dynamodb_client`: a dead endpoint fails fast, a slow answer is awaited
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
#: statuses whose responses never have a body (RFC 9110), whatever their headers say
BODILESS = frozenset({204, 304})
#: a response head larger than this is no DynamoDB answer
MAX_HEAD_BYTES = 64 * 1024
#: read at most this much per receive (more would be allocated, and freed, for every read)
RECEIVE_BYTES = 64 * 1024


# ---- the wire format: boto3's arguments and answers as JSON -------------------------------------------------


def encode(params: Mapping[str, Any]) -> bytes:
    """A request body: boto3's keyword arguments as they are, binary values as base64 text."""
    return orjson.dumps(params, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} to DynamoDB")


#: Where the answers of the six operations, and their errors, hold attribute maps (items, keys):
#: paths of member names, "{}" for every value of a map, "[]" for every element of a list. The
#: unit tests derive the same paths from botocore's service model.
ANSWER_MAPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "PutItem": (("Attributes",), ("ItemCollectionMetrics", "ItemCollectionKey")),
    "UpdateItem": (("Attributes",), ("ItemCollectionMetrics", "ItemCollectionKey")),
    "GetItem": (("Item",),),
    "BatchGetItem": (("Responses", "{}", "[]"), ("UnprocessedKeys", "{}", "Keys", "[]")),
    "BatchWriteItem": (("UnprocessedItems", "{}", "[]", "PutRequest", "Item"),
                       ("UnprocessedItems", "{}", "[]", "DeleteRequest", "Key"),
                       ("ItemCollectionMetrics", "{}", "[]", "ItemCollectionKey")),
    "TransactWriteItems": (("ItemCollectionMetrics", "{}", "[]", "ItemCollectionKey"),),
}
ERROR_MAPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ConditionalCheckFailedException": (("Item",),),
    "TransactionCanceledException": (("CancellationReasons", "[]", "Item"),),
}


def decode(body: bytes, maps: tuple[tuple[str, ...], ...]) -> Any:
    """An answer as boto3 returns it: the JSON, with the binary values (`B`, `BS`) of the
    attribute maps at `maps` as bytes."""
    answer = orjson.loads(body)
    tokens = body.count(b'"B"') + body.count(b'"BS"')
    if tokens:
        binary_to_bytes(answer, maps, tokens)
    return answer


def binary_to_bytes(answer: Any, maps: tuple[tuple[str, ...], ...], tokens: int) -> None:
    """Decode, in place, the binary values in the attribute maps at `maps`.

    The top level of every map comes first; the nested maps and lists only when fewer binary
    values were found there than the answer has `"B"` and `"BS"` tokens (an attribute or a
    string named B counts too, so nothing is missed; a quote inside a string is escaped, so it
    never counts). The processor's items hold their one binary at the top: a batch of them is
    decoded without walking their nested maps. DynamoDB, like every JSON encoder by default,
    writes keys plainly, so the tokens are there to count."""
    found = [attributes for path in maps for attributes in _at(answer, path)]
    decoded = 0
    for attributes in found:
        for value in attributes.values():
            if "B" in value or "BS" in value:  # most values are neither: no call for them
                decoded += _value_bytes(value, nested=False)
    if decoded < tokens:
        for attributes in found:
            for value in attributes.values():
                _value_bytes(value, nested=True)


def _at(node: Any, path: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The dicts at `path` below `node` (steps that do not fit the answer's shape lead nowhere)."""
    if not path:
        if isinstance(node, dict):
            yield node
        return
    step, rest = path[0], path[1:]
    if step == "{}":
        children: Any = node.values() if isinstance(node, dict) else ()
    elif step == "[]":
        children = node if isinstance(node, list) else ()
    else:
        children = (node[step],) if isinstance(node, dict) and step in node else ()
    for child in children:
        yield from _at(child, rest)


def _value_bytes(value: dict[str, Any], nested: bool) -> int:
    """Decode one AttributeValue's binary in place, and those below it if `nested`: how many."""
    if isinstance(value.get("B"), str):
        value["B"] = base64.b64decode(value["B"])
        return 1
    binaries = value.get("BS")
    if binaries and isinstance(binaries[0], str):
        value["BS"] = [base64.b64decode(member) for member in binaries]
        return 1
    if not nested:
        return 0
    if "M" in value:
        return sum(_value_bytes(member, True) for member in value["M"].values())
    if "L" in value:
        return sum(_value_bytes(member, True) for member in value["L"])
    return 0


# ---- signing ----------------------------------------------------------------------------------------------


class Signer:
    """SigV4 headers for DynamoDB requests to one host, signed by the AWS CRT.

    `credentials` is botocore's (`Credentials` or `RefreshableCredentials`): every request asks it
    for its current frozen set, so a refresh by the provider chain is used from the next request
    on. The CRT wants a credentials provider: one is made per distinct set, as botocore's own
    CRT signer does per request."""

    def __init__(self, credentials: Any, region: str, host: str):
        self._credentials = credentials
        self._region = region
        self._host = host
        self._provider: tuple[Any, Any] = (None, None)  # (frozen credentials, CRT provider for them)

    def headers(self, target: str, body: bytes) -> list[tuple[str, str]]:
        """The request's headers, signature included."""
        request = crt_http.HttpRequest("POST", "/", crt_http.HttpHeaders([
            ("Host", self._host), ("Content-Type", CONTENT_TYPE), ("X-Amz-Target", target),
            ("Content-Length", str(len(body)))]))
        config = crt_auth.AwsSigningConfig(credentials_provider=self._current_provider(), region=self._region,
                                           service="dynamodb", signed_body_value=hashlib.sha256(body).hexdigest())
        crt_auth.aws_sign_request(request, config).result()
        return list(request.headers)

    def _current_provider(self) -> Any:
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = self._credentials.get_frozen_credentials()
        known, provider = self._provider
        if frozen != known:
            provider = crt_auth.AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key, frozen.token)
            self._provider = (frozen, provider)
        return provider


# ---- HTTP/1.1 -----------------------------------------------------------------------------------------------


class Response(NamedTuple):
    status: int
    reason: str
    headers: dict[str, str]  # names lowercased, repeated headers joined by ", " (as boto3 shows them)
    body: bytes
    keep_alive: bool


class _Broken(Exception):
    """The exchange broke: the peer closed the connection early, or did not answer in HTTP."""


class Connection:
    """One keep-alive HTTP/1.1 connection: a request is one write, its response is read whole."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buffer = bytearray()
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def dropped(self) -> bool:
        """Whether an idle connection went bad: readable means closed by the server (or garbage)."""
        return bool(self._poll.poll(0)) or bool(self._buffer)

    def exchange(self, request: bytes) -> Response:
        self.sock.sendall(request)
        return self.read_response()

    def close(self) -> None:
        self.sock.close()

    def read_response(self) -> Response:
        version, status, reason, headers = self._read_head()
        while 100 <= status < 200:  # an interim answer (100 Continue) is skipped
            version, status, reason, headers = self._read_head()
        body, delimited = (b"", True) if status in BODILESS else self._read_body(headers)
        connection = headers.get("connection", "").lower()
        reusable = delimited and "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        return Response(status, reason, headers, body, reusable)

    def _read_head(self) -> tuple[str, int, str, dict[str, str]]:
        """The status line's version, status and reason, and the headers."""
        status_line, *lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        version, status, reason = (status_line.split(" ", 2) + [""])[:3]
        if not version.startswith("HTTP/") or not status.isdigit():
            raise _Broken(f"not an HTTP response: {status_line[:40]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return version, int(status), reason, headers

    def _read_body(self, headers: Mapping[str, str]) -> tuple[bytes, bool]:
        """The body, and whether its end was marked (else it ran to the connection's close)."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(), True
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():  # negative, repeated or garbage: no telling where the answer ends
                raise _Broken(f"bad Content-Length {length[:20]!r}")
            return self._read_exactly(int(length)), True
        return self._read_to_close(), False

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size_text = self._read_until(b"\r\n").split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):  # a sign or garbage: not a size
                raise _Broken(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                while self._read_until(b"\r\n"):  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append(self._read_exactly(size))
            self._read_exactly(2)  # the chunk's CRLF

    def _read_until(self, marker: bytes) -> bytes:
        """The bytes before `marker` (consumed with it)."""
        start = 0
        while (end := self._buffer.find(marker, start)) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise _Broken("response head too large")
            start = max(0, len(self._buffer) - len(marker) + 1)
            self._receive()
        found = bytes(self._buffer[:end])
        del self._buffer[:end + len(marker)]
        return found

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._receive()
        found = bytes(self._buffer[:size])
        del self._buffer[:size]
        return found

    def _read_to_close(self) -> bytes:
        while True:
            try:
                self._receive()
            except _Broken:
                found = bytes(self._buffer)
                self._buffer.clear()
                return found

    def _receive(self) -> None:
        data = self.sock.recv(RECEIVE_BYTES)
        if not data:
            raise _Broken("connection closed by the server")
        self._buffer += data


class Pool:
    """Keep-alive connections to one endpoint, shared by threads.

    Connections are taken and given back last-in first-out (a deque's append and pop are atomic,
    no lock needed), at most `size` kept idle. An idle connection the server closed meanwhile is
    noticed before it is used (as urllib3 does), so a request is never sent on it. Failures raise
    botocore's connection errors, as boto3 does."""

    def __init__(self, endpoint_url: str, size: int = 32, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint: {endpoint_url}")
        self.endpoint_url = endpoint_url
        self._address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        self._tls = None
        if parts.scheme == "https":
            self._tls = ssl_context or ssl.create_default_context()
        self._size = size
        self._timeouts = (connect_timeout, read_timeout)
        self._idle: deque[Connection] = deque()

    def send(self, request: bytes) -> Response:
        connection = self._idle_connection() or self._connect()
        try:
            response = connection.exchange(request)
        except BaseException as error:
            connection.close()
            failure = self._failure(error)
            if failure is error:
                raise
            raise failure from error
        if response.keep_alive and len(self._idle) < self._size:
            self._idle.append(connection)
        else:
            connection.close()
        return response

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _idle_connection(self) -> Connection | None:
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:
                return None
            if not connection.dropped():
                return connection
            connection.close()

    def _connect(self) -> Connection:
        connect_timeout, read_timeout = self._timeouts
        sock = None
        try:
            sock = socket.create_connection(self._address, timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
            sock.settimeout(read_timeout)
        except OSError as error:
            if sock is not None:
                sock.close()
            raise self._connect_failure(error) from error
        return Connection(sock)

    def _connect_failure(self, error: OSError) -> Exception:
        if isinstance(error, ssl.SSLError):
            return SSLError(endpoint_url=self.endpoint_url, error=error)
        if isinstance(error, TimeoutError):
            return ConnectTimeoutError(endpoint_url=self.endpoint_url, error=error)
        return EndpointConnectionError(endpoint_url=self.endpoint_url, error=error)

    def _failure(self, error: BaseException) -> BaseException:
        """botocore's exception for a failed exchange (anything not a socket's failure as it is)."""
        if isinstance(error, TimeoutError):
            return ReadTimeoutError(endpoint_url=self.endpoint_url, error=error)
        if isinstance(error, ssl.SSLError):
            return SSLError(endpoint_url=self.endpoint_url, error=error)
        if isinstance(error, (_Broken, OSError, ValueError)):  # ValueError: a malformed length or chunk size
            return ConnectionClosedError(endpoint_url=self.endpoint_url)
        return error


# ---- errors -------------------------------------------------------------------------------------------------


class ModeledErrors:
    """What botocore knows about DynamoDB's errors: the exception class raised for each code, and
    the fields of the error body it copies into `error.response` (`Item` for a failed condition
    with ALL_OLD, `CancellationReasons` for a cancelled transaction, `message`, ...)."""

    def __init__(self, botocore_client: Any):
        self.exceptions = botocore_client.exceptions
        self._model = botocore_client.meta.service_model
        self._fields: dict[str, tuple[tuple[str, str], ...]] = {}

    def error_class(self, code: str) -> type[ClientError]:
        return self.exceptions.from_code(code)

    def fields(self, code: str) -> tuple[tuple[str, str], ...]:
        """(member, its name in the body) of the code's modeled error; none for an unmodeled code."""
        known = self._fields.get(code)
        if known is None:
            shape = self._model.shape_for_error_code(code)
            members = shape.members.items() if shape is not None else ()
            known = self._fields[code] = tuple((name, member.serialization.get("name", name))
                                               for name, member in members)
        return known


def error_response(response: Response, errors: ModeledErrors) -> dict[str, Any]:
    """`error.response` as botocore shapes it for DynamoDB's JSON protocol: the code (the
    `__type` after its `#`) and message, the metadata, and the error's modeled fields."""
    if response.status >= 500 and response.body.strip()[:6] in (b"", b"<html>"):  # not DynamoDB's own answer
        return {"Error": {"Code": str(response.status), "Message": http.client.responses.get(response.status, "")},
                "ResponseMetadata": {"HTTPStatusCode": response.status, "HTTPHeaders": response.headers,
                                     "RetryAttempts": 0}}
    body = _error_body(response.body)
    code = str(body.get("__type") or response.status).split(":", 1)[0].rsplit("#", 1)[-1]
    shaped = {"Error": {"Message": body.get("message", body.get("Message", "")), "Code": code},
              "ResponseMetadata": response_metadata(response)}
    tokens = response.body.count(b'"B"') + response.body.count(b'"BS"')
    if tokens and code in ERROR_MAPS:
        binary_to_bytes(body, ERROR_MAPS[code], tokens)
    for member, name in errors.fields(code):
        if body.get(name) is not None:
            shaped[member] = body[name]
    return shaped


def _error_body(body: bytes) -> dict[str, Any]:
    """The error's JSON (botocore's way: a body that is not JSON is the message)."""
    if not body:
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"message": body.decode("utf-8", "replace")}
    return parsed if isinstance(parsed, dict) else {}


def response_metadata(response: Response) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if "x-amzn-requestid" in response.headers:
        metadata["RequestId"] = response.headers["x-amzn-requestid"]
    metadata.update(HTTPStatusCode=response.status, HTTPHeaders=response.headers, RetryAttempts=0)
    return metadata


# ---- the client ---------------------------------------------------------------------------------------------


class DataPlaneClient:
    """boto3's low-level DynamoDB client for the processor's six data-plane calls: the same keyword
    arguments, response dicts and exceptions. Thread-safe; connections are pooled and kept alive.

    Made by `processor.dynamodb.client.data_plane_client`, which resolves endpoint, region and
    credentials as boto3 does."""

    def __init__(self, endpoint_url: str, region: str, credentials: Any, errors: ModeledErrors, pool: int = 32,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None):
        """`credentials`: botocore's (`session.get_credentials()`), None when there are none (every
        call then raises NoCredentialsError, as boto3's do)."""
        self.endpoint_url = endpoint_url
        self.region = region
        self.exceptions = errors.exceptions
        self._errors = errors
        self._pool = Pool(endpoint_url, pool, connect_timeout, read_timeout, ssl_context)
        host = urlsplit(endpoint_url).netloc
        self._signer = Signer(credentials, region, host)
        # unsigned headers, as boto3's: the answer comes uncompressed (the reader knows no encodings)
        self._request_line = f"POST / HTTP/1.1\r\nUser-Agent: {USER_AGENT}\r\nAccept-Encoding: identity\r\n".encode()

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self._call("PutItem", params)

    def get_item(self, **params: Any) -> dict[str, Any]:
        return self._call("GetItem", params)

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return self._call("BatchGetItem", params)

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        return self._call("BatchWriteItem", params)

    def update_item(self, **params: Any) -> dict[str, Any]:
        return self._call("UpdateItem", params)

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        return self._call("TransactWriteItems", params)

    def close(self) -> None:
        """Close the idle connections (a later call opens new ones)."""
        self._pool.close()

    def _call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body = encode(params)
        response = self._pool.send(self._request(TARGET_PREFIX + operation, body))
        if response.status >= 300:
            shaped = error_response(response, self._errors)
            raise self._errors.error_class(shaped["Error"]["Code"])(shaped, operation)
        try:
            result = decode(response.body, ANSWER_MAPS[operation]) if response.body else {}
        except orjson.JSONDecodeError as error:
            raise ResponseParserError(f"{operation}: the answer is not JSON ({error})") from None
        result["ResponseMetadata"] = response_metadata(response)
        return result

    def _request(self, target: str, body: bytes) -> bytes:
        """The whole request, head and body, for one write."""
        head = "".join(f"{name}: {value}\r\n" for name, value in self._signer.headers(target, body))
        return b"".join((self._request_line, head.encode("latin-1"), b"\r\n", body))

