"""The data-plane client against boto3 on the very same bytes: a canned peer (a thread on a
loopback socket, no emulator) answers both clients with fixed HTTP responses and records what
they send. Requests must say what boto3's say (binary as base64, nested maps and lists), answers
and errors must come back as boto3 shapes them (binary as bytes, the modeled fields of
ConditionalCheckFailed and TransactionCanceled), signatures must be SigV4 as botocore computes
it, refreshed credentials must be used, and a failed connection must be one the retries retry."""
from __future__ import annotations

import base64
import json
import re
import datetime
import socket
import ssl
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import (ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError,
                                 ReadTimeoutError, SSLError)

from processor.dynamodb.client import data_plane_client, data_plane_for, dynamodb_client
from processor.dynamodb.dataplane import ANSWER_MAPS, ERROR_MAPS, DataPlaneClient, ModeledErrors, decode, encode
from processor.dynamodb.retry import is_retryable, is_throttling
from tests.twins import MemoryDynamoDB

CREDENTIALS = {"aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"}
DATE = "Thu, 26 Nov 2026 12:00:00 GMT"
BLOB = bytes(range(256))
#: an item with every binary place: top level, a set, inside a map, inside a list
ITEM = {"conversationId": {"S": "c1"}, "version": {"N": "3"}, "_k": {"B": BLOB}, "set": {"BS": [b"\x00", b"\xff"]},
        "nested": {"M": {"inner": {"B": b"in a map"}, "list": {"L": [{"B": b"in a list"}, {"N": "1.50"}]}}},
        "names": {"SS": ["a", "B"]}, "flag": {"BOOL": True}, "nothing": {"NULL": True}}


def wire(value: Any) -> Any:
    """`value` as it travels: bytes as base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {key: wire(member) for key, member in value.items()}
    if isinstance(value, list):
        return [wire(member) for member in value]
    return value


def http_response(status: int, body: Any, reason: str = "", headers: dict[str, str] | None = None,
                  chunked: bool = False) -> bytes:
    """A DynamoDB answer as it comes over the wire (`body`: JSON-able, or bytes as they are)."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "REQ1", "Date": DATE,
            "x-amz-crc32": str(zlib.crc32(payload)), **(headers or {})}
    if chunked:
        head["Transfer-Encoding"] = "chunked"
        pieces = [payload[i:i + 7] for i in range(0, len(payload), 7)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    else:
        head["Content-Length"] = str(len(payload))
    lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode() + payload


def error(status: int, code: str, message: str, **fields: Any) -> bytes:
    return http_response(status, {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message,
                                  **wire(fields)})


class CannedPeer:
    """A loopback peer answering every request with `answer(request)`: the response's bytes, or a
    callable given the socket (to misbehave). Records each request (head text, body bytes)."""

    def __init__(self, answer: Callable[[tuple[str, bytes]], Any], tls: ssl.SSLContext | None = None):
        self.answer = answer
        self._tls = tls
        self.requests: list[tuple[str, bytes]] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        if self._tls is not None:
            try:
                connection = self._tls.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate
        reader = connection.makefile("rb")
        with connection:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                text = head.decode("latin-1")
                length = next((int(line.split(":", 1)[1]) for line in text.split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                request = (text, reader.read(length))
                self.requests.append(request)
                reply = self.answer(request)
                if callable(reply):
                    reply(connection)
                    return
                connection.sendall(reply)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def peer() -> Iterator[Callable[..., CannedPeer]]:
    started: list[CannedPeer] = []

    def start(answer: Any) -> CannedPeer:
        started.append(CannedPeer(answer if callable(answer) else lambda _: answer))
        return started[-1]

    yield start
    for one in started:
        one.close()


def clients(url: str) -> tuple[Any, Any]:
    """boto3's client (the processor's settings) and the data-plane client, for `url`."""
    return (dynamodb_client(url, region="us-east-1", credentials=CREDENTIALS),
            data_plane_client(url, region="us-east-1", credentials=CREDENTIALS))


def both(url: str, operation: str, **params: Any) -> tuple[Any, Any]:
    """What boto3 and the data-plane client make of the same answer: a response or a ClientError."""
    outcomes = []
    for client in clients(url):
        try:
            outcomes.append(getattr(client, operation)(**params))
        except ClientError as raised:
            outcomes.append(raised)
    return outcomes[0], outcomes[1]


def assert_same(ours: Any, theirs: Any) -> None:
    """Equal, but for boto3's retry bookkeeping: with its retries off (max_attempts=1) botocore
    still marks a retryable error as having reached its maximum, in the metadata and the message."""
    if isinstance(theirs, ClientError):
        assert type(ours).__name__ == type(theirs).__name__ and isinstance(ours, ClientError)
        assert str(ours) == str(theirs).replace(" (reached max retries: 1)", "")
        assert without_retries(ours.response) == without_retries(theirs.response)
    else:
        assert ours == theirs


def without_retries(response: dict[str, Any]) -> dict[str, Any]:
    metadata = {key: value for key, value in response["ResponseMetadata"].items()
                if key not in ("RetryAttempts", "MaxAttemptsReached")}
    return {**response, "ResponseMetadata": metadata}


# ---- requests ------------------------------------------------------------------------------------------------


def test_requests_say_what_boto3_says(peer):
    """Binary values as base64 at any depth, the rest as given; the same target and content type."""
    canned = peer(http_response(200, {}))
    params = {"TableName": "t", "Item": ITEM, "ConditionExpression": "attribute_not_exists(#id) OR #v = :e",
              "ExpressionAttributeNames": {"#id": "conversationId", "#v": "version"},
              "ExpressionAttributeValues": {":e": {"N": "2"}}, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
    for client in clients(canned.url):
        client.put_item(**params)
    (boto_head, boto_body), (our_head, our_body) = canned.requests
    assert json.loads(our_body) == json.loads(boto_body) == wire(params)
    for header in ("x-amz-target: dynamodb_20120810.putitem", "content-type: application/x-amz-json-1.0",
                   "accept-encoding: identity"):
        assert header in boto_head.lower() and header in our_head.lower()


def test_encode_sends_bytes_as_base64_and_sets_as_lists():
    body = json.loads(encode({"Item": {"b": {"B": bytearray(b"ab")}, "bs": {"BS": {b"x"}}, "n": {"N": "1"}}}))
    assert body == {"Item": {"b": {"B": "YWI="}, "bs": {"BS": ["eA=="]}, "n": {"N": "1"}}}
    with pytest.raises(TypeError):
        encode({"Item": {"x": {"N": object()}}})


def test_the_signature_is_sigv4_as_botocore_computes_it(peer):
    """botocore's SigV4Auth, given our request's own date, signs it with the same signature."""
    canned = peer(http_response(200, {}))
    client = DataPlaneClient(canned.url, "eu-west-1", Credentials("AKIDTEST", "secret", "session-token"),
                             ModeledErrors(_botocore_client()))
    client.get_item(TableName="t", Key={"conversationId": {"S": "c1"}})
    head, body = canned.requests[0]
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
    assert headers["X-Amz-Security-Token"] == "session-token"
    ours = headers.pop("Authorization")
    signer = SigV4Auth(Credentials("AKIDTEST", "secret", "session-token"), "dynamodb", "eu-west-1")
    signed = {name: value for name, value in headers.items() if name not in ("User-Agent", "Accept-Encoding")}
    request = AWSRequest("POST", canned.url + "/", data=body, headers=signed)
    request.context["timestamp"] = headers["X-Amz-Date"]
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert ours.endswith(f"Signature={expected}")
    assert f"Credential=AKIDTEST/{headers['X-Amz-Date'][:8]}/eu-west-1/dynamodb/aws4_request" in ours


def test_refreshed_credentials_sign_the_next_request(peer):
    """Credentials from the chain refresh as botocore refreshes them (here: every request, as each
    set expires within botocore's mandatory refresh window); each request is signed with the
    current set."""
    canned = peer(http_response(200, {}))
    issued = iter(range(1, 100))

    def fetch() -> dict[str, str]:
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
        return {"access_key": f"AKID{next(issued)}", "secret_key": "s", "token": "t", "expiry_time": expiry}

    credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "test")
    client = DataPlaneClient(canned.url, "us-east-1", credentials, ModeledErrors(_botocore_client()))
    for _ in range(2):
        client.get_item(TableName="t", Key={"conversationId": {"S": "c1"}})
    keys = [head.split("Credential=")[1].split("/")[0] for head, _ in canned.requests]
    assert keys == ["AKID2", "AKID3"]


def test_no_credentials_fails_as_boto3_does(peer):
    canned = peer(http_response(200, {}))
    client = DataPlaneClient(canned.url, "us-east-1", None, ModeledErrors(_botocore_client()))
    with pytest.raises(NoCredentialsError):
        client.get_item(TableName="t", Key={"conversationId": {"S": "c1"}})
    assert canned.requests == []


# ---- answers -------------------------------------------------------------------------------------------------


ANSWERS = {
    "get_item": ({"TableName": "t", "Key": {"conversationId": {"S": "c1"}}}, {"Item": ITEM}),
    "put_item": ({"TableName": "t", "Item": ITEM, "ReturnValues": "ALL_OLD"},
                 {"Attributes": ITEM, "ItemCollectionMetrics": {"ItemCollectionKey": {"k": {"B": b"key"}},
                                                                "SizeEstimateRangeGB": [0.0, 1.0]}}),
    "update_item": ({"TableName": "t", "Key": {"conversationId": {"S": "c1"}}, "UpdateExpression": "ADD #e :one",
                     "ExpressionAttributeNames": {"#e": "epoch"}, "ExpressionAttributeValues": {":one": {"N": "1"}},
                     "ReturnValues": "UPDATED_NEW"}, {"Attributes": {"epoch": {"N": "7"}}}),
    "batch_get_item": ({"RequestItems": {"t": {"Keys": [{"conversationId": {"S": "c1"}}], "ConsistentRead": True}}},
                       {"Responses": {"t": [ITEM, {**ITEM, "conversationId": {"S": "c2"}}]},
                        "UnprocessedKeys": {"t": {"Keys": [{"k": {"B": b"left"}}], "ConsistentRead": True}}}),
    "batch_write_item": ({"RequestItems": {"t": [{"PutRequest": {"Item": ITEM}}]}},
                         {"UnprocessedItems": {"t": [{"PutRequest": {"Item": ITEM}},
                                                     {"DeleteRequest": {"Key": {"k": {"B": b"gone"}}}}]},
                          "ItemCollectionMetrics": {"t": [{"ItemCollectionKey": {"k": {"B": b"ick"}},
                                                           "SizeEstimateRangeGB": [0.0, 1.0]}]}}),
    "transact_write_items": ({"TransactItems": [{"Put": {"TableName": "t", "Item": ITEM}}]},
                             {"ItemCollectionMetrics": {"t": [{"ItemCollectionKey": {"k": {"B": b"ick"}},
                                                               "SizeEstimateRangeGB": [0.0, 1.0]}]}}),
}


@pytest.mark.parametrize("operation", sorted(ANSWERS))
def test_answers_are_shaped_as_boto3_shapes_them(peer, operation):
    params, answer = ANSWERS[operation]
    theirs, ours = both(peer(http_response(200, wire(answer))).url, operation, **params)
    assert_same(ours, theirs)
    assert {key: value for key, value in ours.items() if key != "ResponseMetadata"} == answer  # bytes, strings
    assert ours["ResponseMetadata"]["RequestId"] == "REQ1" and ours["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_an_empty_answer_and_a_chunked_one(peer):
    theirs, ours = both(peer(http_response(200, {})).url, "put_item", TableName="t", Item=ITEM)
    assert_same(ours, theirs)
    params, answer = ANSWERS["get_item"]
    theirs, ours = both(peer(http_response(200, wire(answer), chunked=True)).url, "get_item", **params)
    assert_same(ours, theirs)
    assert ours["Item"] == ITEM


def test_attribute_maps_are_where_botocore_s_model_puts_them():
    """ANSWER_MAPS and ERROR_MAPS list every path to an AttributeValue in the outputs (and errors)
    of the six operations, as botocore's service model has them."""
    model = botocore.session.get_session().get_service_model("dynamodb")
    operations = {"PutItem", "GetItem", "BatchGetItem", "BatchWriteItem", "UpdateItem", "TransactWriteItems"}
    answers = {name: set(_map_paths(model.operation_model(name).output_shape)) for name in operations}
    errors = {shape.name: set(_map_paths(shape)) for name in operations
              for shape in model.operation_model(name).error_shapes if _map_paths(shape)}
    assert answers == {name: set(paths) for name, paths in ANSWER_MAPS.items()}
    assert errors == {name: set(paths) for name, paths in ERROR_MAPS.items()}


def _map_paths(shape: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths to the maps of AttributeValue below `shape` ("{}" a map's values, "[]" a list's)."""
    if shape.type_name == "map" and shape.value.name == "AttributeValue":
        return [path]
    if shape.type_name == "structure" and shape.name != "AttributeValue":
        return [found for name, member in shape.members.items() for found in _map_paths(member, path + (name,))]
    if shape.type_name == "list":
        return _map_paths(shape.member, path + ("[]",))
    if shape.type_name == "map":
        return _map_paths(shape.value, path + ("{}",))
    return []


def test_binary_values_nested_or_not_are_decoded_whatever_the_names():
    """The top of each item first; nested maps too when the answer has more binary tokens (an
    attribute named B, a string "B")."""
    item = {"B": {"M": {"deep": {"L": [{"BS": ["AA=="]}]}}}, "s": {"S": "B"}, "top": {"B": "AQ=="}}
    answer = decode(json.dumps({"Item": item}).encode(), ANSWER_MAPS["GetItem"])
    assert answer == {"Item": {"B": {"M": {"deep": {"L": [{"BS": [b"\x00"]}]}}}, "s": {"S": "B"},
                               "top": {"B": b"\x01"}}}
    plain = decode(b'{"Item":{"top":{"B":"AQ=="},"m":{"M":{"x":{"S":"no binary here"}}}}}', ANSWER_MAPS["GetItem"])
    assert plain["Item"]["top"]["B"] == b"\x01"


# ---- errors --------------------------------------------------------------------------------------------------


ERRORS = {
    "condition failed, ALL_OLD item": ("put_item", error(400, "ConditionalCheckFailedException",
                                                         "The conditional request failed", Item=ITEM)),
    "condition failed, no item": ("put_item", error(400, "ConditionalCheckFailedException",
                                                    "The conditional request failed")),
    "transaction cancelled": ("transact_write_items", http_response(400, {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled [ConditionalCheckFailed, None]",
        "CancellationReasons": wire([{"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
                                      "Item": ITEM}, {"Code": "None"}])})),
    "validation": ("put_item", error(400, "ValidationException", "One or more parameter values were invalid")),
    "no such table": ("get_item", error(400, "ResourceNotFoundException", "Requested resource not found")),
    "throttled": ("batch_get_item", error(400, "ProvisionedThroughputExceededException", "slow down")),
    "type with a suffix": ("get_item", http_response(400, {"__type": "com.amazon.coral.service#"
                                                           "UnrecognizedClientException:extra", "Message": "bad key"})),
    "internal error": ("update_item", error(500, "InternalServerError", "Internal server error")),
    "an HTML page": ("get_item", http_response(503, b"<html><body>Service Unavailable</body></html>",
                                               "Service Unavailable", {"Content-Type": "text/html"})),
    "empty 500": ("get_item", http_response(500, b"", "Internal Server Error")),
    "not JSON": ("get_item", http_response(400, b"plain words")),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_raised_as_boto3_raises_them(peer, case):
    operation, answer = ERRORS[case]
    params = {**ANSWERS[operation][0]}
    theirs, ours = both(peer(answer).url, operation, **params)
    assert isinstance(theirs, ClientError)
    assert_same(ours, theirs)


def test_a_failed_condition_hands_back_the_stored_item_with_bytes(peer):
    _, ours = clients(peer(ERRORS["condition failed, ALL_OLD item"][1]).url)
    with pytest.raises(ours.exceptions.ConditionalCheckFailedException) as raised:
        ours.put_item(**ANSWERS["put_item"][0])
    assert raised.value.response["Item"] == ITEM
    _, ours = clients(peer(ERRORS["transaction cancelled"][1]).url)
    with pytest.raises(ours.exceptions.TransactionCanceledException) as raised:
        ours.transact_write_items(**ANSWERS["transact_write_items"][0])
    reasons = raised.value.response["CancellationReasons"]
    assert reasons[0]["Item"] == ITEM and [reason["Code"] for reason in reasons] == ["ConditionalCheckFailed", "None"]


def test_throttling_and_server_errors_are_retryable(peer):
    _, ours = clients(peer(ERRORS["throttled"][1]).url)
    with pytest.raises(ClientError) as raised:
        ours.batch_get_item(**ANSWERS["batch_get_item"][0])
    assert is_retryable(raised.value) and is_throttling(raised.value)
    _, ours = clients(peer(ERRORS["an HTML page"][1]).url)
    with pytest.raises(ClientError) as raised:
        ours.get_item(**ANSWERS["get_item"][0])
    assert is_retryable(raised.value) and not is_throttling(raised.value)


# ---- connections ---------------------------------------------------------------------------------------------


def test_connections_are_kept_alive_and_shared_by_threads(peer):
    canned = peer(http_response(200, wire({"Item": ITEM})))
    _, ours = clients(canned.url)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: ours.get_item(**ANSWERS["get_item"][0])["Item"], range(400)))
    assert answers == [ITEM] * 400 and len(canned.requests) == 400
    assert canned.connections <= 16


def test_a_connection_the_server_closes_is_replaced(peer):
    """`Connection: close` on an answer, or a close while idle: the next call opens a new one."""
    served = iter(range(100))

    def answer(request: tuple[str, bytes]) -> Any:
        number = next(served)
        if number == 0:
            return http_response(200, {}, headers={"Connection": "close"})
        if number == 1:
            return lambda sock: sock.sendall(http_response(200, {}))  # then closes, idle
        return http_response(200, {})

    canned = peer(answer)
    _, ours = clients(canned.url)
    for _ in range(4):
        ours.put_item(TableName="t", Item=ITEM)
        time.sleep(0.05)  # let the close arrive
    assert canned.connections == 3


def test_a_refused_connection_is_retryable():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    _, ours = clients(url)  # nothing listens there any more
    with pytest.raises(EndpointConnectionError) as raised:
        ours.get_item(**ANSWERS["get_item"][0])
    assert is_retryable(raised.value)


@pytest.mark.parametrize("misbehaviour", ["closes at once", "closes mid-answer", "garbage", "negative length",
                                          "two lengths", "negative chunk"])
def test_a_dropped_or_broken_answer_is_retryable(peer, misbehaviour):
    whole = http_response(200, wire({"Item": ITEM}))
    length = re.search(rb"Content-Length: \d+", whole).group()
    acts = {"closes at once": lambda sock: None, "closes mid-answer": lambda sock: sock.sendall(whole[:len(whole) // 2]),
            "garbage": lambda sock: sock.sendall(b"SSH-2.0-OpenSSH\r\n\r\n"),
            # never read as an empty body ("no such item"): a wrong value, not a retry, would follow
            "negative length": lambda sock: sock.sendall(whole.replace(length, b"Content-Length: -1")),
            "two lengths": lambda sock: sock.sendall(whole.replace(length, length + b"\r\n" + length)),
            "negative chunk": lambda sock: sock.sendall(whole.split(b"\r\n\r\n")[0].replace(length, b"Transfer-Encoding: "
                                                         b"chunked") + b"\r\n\r\n-5\r\nabc\r\n0\r\n\r\n")}
    _, ours = clients(peer(lambda _: acts[misbehaviour]).url)
    with pytest.raises(ConnectionClosedError) as raised:
        ours.get_item(**ANSWERS["get_item"][0])
    assert is_retryable(raised.value)


def test_https_endpoints_are_verified(tmp_path):
    """TLS with the certificate checked: a peer the context trusts answers; one it does not trust
    fails as botocore's SSLError (retryable, as boto3's is)."""
    certificate, key = self_signed(tmp_path, "localhost")
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(certificate, key)
    canned = CannedPeer(lambda _: http_response(200, wire({"Item": ITEM})), tls=served)
    try:
        url = canned.url.replace("http://127.0.0.1", "https://localhost")
        trusting = ssl.create_default_context(cafile=certificate)
        client = DataPlaneClient(url, "us-east-1", Credentials("a", "b"), ModeledErrors(_botocore_client()),
                                 ssl_context=trusting)
        assert client.get_item(**ANSWERS["get_item"][0])["Item"] == ITEM
        stranger = DataPlaneClient(url, "us-east-1", Credentials("a", "b"), ModeledErrors(_botocore_client()))
        with pytest.raises(SSLError) as raised:
            stranger.get_item(**ANSWERS["get_item"][0])
        assert is_retryable(raised.value)
    finally:
        canned.close()


def self_signed(directory: Any, host: str) -> tuple[str, str]:
    """A certificate for `host` and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    paths = (str(directory / "certificate.pem"), str(directory / "key.pem"))
    with open(paths[0], "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return paths


def test_a_silent_server_times_out_retryably(peer):
    canned = peer(lambda _: (lambda sock: time.sleep(1)))
    client = DataPlaneClient(canned.url, "us-east-1", Credentials("a", "b"), ModeledErrors(_botocore_client()),
                             read_timeout=0.2)
    with pytest.raises(ReadTimeoutError) as raised:
        client.get_item(**ANSWERS["get_item"][0])
    assert is_retryable(raised.value)


# ---- the factory ---------------------------------------------------------------------------------------------


def test_the_factory_resolves_region_and_endpoint_as_boto3_does(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    client = data_plane_client(credentials=CREDENTIALS)
    assert isinstance(client, DataPlaneClient)
    assert (client.endpoint_url, client.region) == ("https://dynamodb.eu-central-1.amazonaws.com", "eu-central-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")
    assert data_plane_client(credentials=CREDENTIALS).endpoint_url == "http://127.0.0.1:1"


def test_with_a_proxy_the_factory_hands_out_boto3_s_client(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = data_plane_client(region="us-east-1", credentials=CREDENTIALS)
    assert not isinstance(client, DataPlaneClient) and hasattr(client, "describe_table")


def test_a_client_that_is_not_boto3_s_is_its_own_data_plane():
    twin = MemoryDynamoDB()
    assert data_plane_for(twin) is twin
    control = dynamodb_client("http://127.0.0.1:1", region="eu-west-1", credentials=CREDENTIALS)
    assert isinstance(data_plane_for(control), DataPlaneClient)
    assert (data_plane_for(control).endpoint_url, data_plane_for(control).region) == ("http://127.0.0.1:1", "eu-west-1")


def _botocore_client() -> Any:
    return botocore.session.get_session().create_client("dynamodb", region_name="us-east-1",
                                                        aws_access_key_id="a", aws_secret_access_key="b")


def test_a_bodiless_status_is_not_read_until_the_read_timeout(peer):
    """A 204 has no body whatever its headers say: the connection's next answer follows at once."""
    answer = b"HTTP/1.1 204 No Content\r\nx-amzn-RequestId: REQ1\r\n\r\n"
    _, ours = clients(peer(answer).url)
    started = time.monotonic()
    assert ours.put_item(TableName="t", Item=ITEM)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert time.monotonic() - started < 5
