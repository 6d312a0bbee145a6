"""Client CPU per DynamoDB data-plane request: boto3's client beside the data-plane client (issue 12).

    .venv/bin/python -m bench.client_cpu [--requests 400] [--rounds 3] [--threads 16] [--out FILE]

The same requests through both clients, side by side in one run, against the local emulator (its
own process, so its CPU is not counted): a conditional PutItem that is written, one refused with
its ALL_OLD item, a BatchGetItem of 100 stored conversations, a TransactWriteItems (a conversation
Put and three metric ADDs) and an UpdateItem (the writer epoch's ADD); on one thread, then on
`--threads`. Client CPU is this process's CPU time (every thread's) per request; each figure is the
median of `--rounds`, boto3 and the data plane alternating, in a process tuned as the processor's
commands are (`processor.runtime.tune_gc`).

Two more rows put the figures in context:
  * floor: a request already signed and serialized, sent again over a pooled connection; no
    client can cost less than this round trip on this machine;
  * canned: the same scenarios against a peer process that answers at once with the emulator's
    own recorded answers. The emulator takes milliseconds per request, and a client that waits
    that long pays again in CPU when it wakes (cold caches, a descheduled virtual CPU); the canned
    peer keeps the client hot, as a busy processor is, which isolates what the client itself costs.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import botocore.compat
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from devstack.emulator import LOCAL_ENVIRONMENT, REGION, LocalEmulator
from processor.dynamodb.client import data_plane_client, dynamodb_client, ensure_table
from processor.dynamodb.dataplane import Pool, Signer, encode
from processor.dynamodb.item import KEY, to_item
from processor.reduce import ConversationState
from processor.runtime import tune_gc

CREDENTIALS = {"aws_access_key_id": LOCAL_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
               "aws_secret_access_key": LOCAL_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"]}
CONDITION = "attribute_not_exists(#id) OR #v = :expected"
BATCH_KEYS = 100
#: numbers every request of a run apart (new items get new keys); `next` on it is atomic
NUMBERS = itertools.count()


def conversation(cid: str, version: int = 1) -> dict[str, Any]:
    """A conversation item as the sink writes it: a dozen projected fields, their stamps, the
    recent event keys (binary) and three participants' sessions (about 1.5 KB). Made once per
    version, only the key changes: building items is the sink's cost, not the client's."""
    return {**_conversation(version), KEY: {"S": cid}}


@functools.lru_cache(maxsize=None)
def _conversation(version: int) -> dict[str, Any]:
    registers = {name: (1_767_225_600_000 + n, f"{name}-value-{n}") for n, name in enumerate(
        ("queueId", "mediaType", "direction", "status", "wrapupCode", "agentUserId", "ani", "dnis",
         "divisionId", "language", "skill", "flowId"))}
    registers.update({f"~s~agent{n}": (1_767_225_600_000, [1_767_225_600_000, f"q{n}", 12, 30_000, None])
                      for n in range(3)})
    return to_item("template", ConversationState(registers, list(range(1, 41))), version, None, None)


@dataclass(frozen=True)
class Scenario:
    """One kind of request: the items it needs stored, then its n-th call's arguments, the error
    code it must end in (None: it must succeed), and its share of `--requests` (batches are slow
    on the emulator)."""

    name: str
    stored: list[dict[str, Any]]
    operation: str
    params: Callable[[str, int], dict[str, Any]]
    refused: str | None = None
    share: float = 1.0

    def setup(self, client: Any, table: str) -> None:
        for item in self.stored:
            client.put_item(TableName=table, Item=item)

    def call(self, client: Any, table: str, n: int) -> None:
        try:
            getattr(client, self.operation)(**self.params(table, n))
        except ClientError as error:
            if error.response["Error"]["Code"] != self.refused:
                raise
            return
        if self.refused:
            raise AssertionError(f"{self.name}: not refused")


def versioned_put(table: str, item: dict[str, Any], expected: int) -> dict[str, Any]:
    return {"TableName": table, "Item": item, "ConditionExpression": CONDITION,
            "ExpressionAttributeNames": {"#id": KEY, "#v": "version"},
            "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


def adds(table: str, key: str) -> dict[str, Any]:
    return {"Update": {"TableName": table, "Key": {KEY: {"S": key}}, "UpdateExpression": "ADD #a :a, #b :b",
                       "ExpressionAttributeNames": {"#a": "nOffered", "#b": "tHandle"},
                       "ExpressionAttributeValues": {":a": {"N": "1"}, ":b": {"N": "30000"}}}}


def scenarios(run: str) -> list[Scenario]:
    """The hot path's requests; `run` keeps each run's new items apart."""
    batch = [conversation(f"read-{n}") for n in range(BATCH_KEYS)]
    keys = [{KEY: item[KEY]} for item in batch]
    return [
        Scenario("PutItem, written", [], "put_item",
                 lambda table, n: versioned_put(table, conversation(f"{run}-put-{n}"), 0)),
        Scenario("PutItem, refused with ALL_OLD", [conversation("stored", 5)], "put_item",
                 lambda table, n: versioned_put(table, conversation("stored", 6), 1),
                 refused="ConditionalCheckFailedException"),
        Scenario(f"BatchGetItem, {BATCH_KEYS} keys", batch, "batch_get_item",
                 lambda table, n: {"RequestItems": {table: {"Keys": keys, "ConsistentRead": True}}}, share=0.1),
        Scenario("TransactWriteItems, Put + 3 ADDs", [], "transact_write_items",
                 lambda table, n: {"TransactItems": [{"Put": versioned_put(table, conversation(f"{run}-tx-{n}"), 0)},
                                                     *(adds(table, f"{run}-partial-{n % 16}-{cell}")
                                                       for cell in range(3))]}),
        Scenario("UpdateItem, ADD", [], "update_item",
                 lambda table, n: {"TableName": table, "Key": {KEY: {"S": f"{run}-epoch-{n % 16}"}},
                                   "UpdateExpression": "ADD #e :one", "ExpressionAttributeNames": {"#e": "epoch"},
                                   "ExpressionAttributeValues": {":one": {"N": "1"}}, "ReturnValues": "UPDATED_NEW"}),
    ]


# ---- measuring ----------------------------------------------------------------------------------------------


def cpu_per_request(call: Callable[[int], Any], requests: int, threads: int) -> float:
    """Milliseconds of this process's CPU per request, `requests` spread over `threads`."""
    started = time.process_time()
    if threads == 1:
        for n in range(requests):
            call(n)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(call, range(requests)))
    return (time.process_time() - started) * 1000 / requests


def compare(clients: dict[str, Any], table: str, scenario: Scenario, requests: int, rounds: int,
            threads: int) -> dict[str, float]:
    """Median CPU per request of each client, warmed up first, the clients taking turns."""
    samples: dict[str, list[float]] = {name: [] for name in clients}

    def numbered(client: Any) -> Callable[[int], Any]:
        return lambda _: scenario.call(client, table, next(NUMBERS))

    requests = max(threads, int(requests * scenario.share))
    for name, client in clients.items():  # connections opened, code paths warm
        cpu_per_request(numbered(client), max(threads, int(20 * scenario.share)), threads)
    for _ in range(rounds):
        for name, client in clients.items():
            samples[name].append(cpu_per_request(numbered(client), requests, threads))
    return {name: round(statistics.median(values), 3) for name, values in samples.items()}


def signed(endpoint: str, operation: str, params: dict[str, Any]) -> bytes:
    """A request as the data-plane client sends it, signed once."""
    body = encode(params)
    target = "DynamoDB_20120810." + "".join(part.title() for part in operation.split("_"))
    headers = Signer(Credentials(*CREDENTIALS.values()), REGION, endpoint.split("//", 1)[1]).headers(target, body)
    return b"POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers).encode() + b"\r\n" + body


def floor(endpoint: str, table: str, requests: int) -> float:
    """CPU per request of a pooled round trip with nothing to sign or serialize (a GetItem)."""
    request = signed(endpoint, "get_item", {"TableName": table, "Key": {KEY: {"S": "stored"}}})
    pool = Pool(endpoint)
    for _ in range(20):
        pool.send(request)
    return round(statistics.median(cpu_per_request(lambda _: pool.send(request), requests, 1) for _ in range(3)), 3)


# ---- the canned peer ----------------------------------------------------------------------------------------


def recorded(endpoint: str, table: str, scenario: Scenario) -> bytes:
    """The emulator's answer to the scenario's request, as raw HTTP."""
    answer = Pool(endpoint).send(signed(endpoint, scenario.operation, scenario.params(table, 10 ** 8)))
    head = "".join(f"{name}: {value}\r\n" for name, value in answer.headers.items() if name != "content-length")
    return (f"HTTP/1.1 {answer.status} {answer.reason}\r\n{head}content-length: {len(answer.body)}\r\n\r\n".encode()
            + answer.body)


def serve_canned(listener: socket.socket, answer: bytes) -> None:
    """Answer every request on every connection with `answer` (in its own process)."""
    def serve(connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        with connection:
            while True:
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if not line:
                    return
                reader.read(length)
                connection.sendall(answer)

    while True:
        connection, _ = listener.accept()
        threading.Thread(target=serve, args=(connection,), daemon=True).start()


class CannedPeer:
    def __init__(self, answer: bytes):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._process = multiprocessing.get_context("fork").Process(target=serve_canned,
                                                                    args=(self._listener, answer), daemon=True)

    def __enter__(self) -> CannedPeer:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join()
        self._listener.close()


# ---- the run ------------------------------------------------------------------------------------------------


def both_clients(endpoint: str) -> dict[str, Any]:
    return {"boto3": dynamodb_client(endpoint, region=REGION, credentials=CREDENTIALS),
            "data plane": data_plane_client(endpoint, region=REGION, credentials=CREDENTIALS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per client, scenario and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (the median is kept)")
    parser.add_argument("--threads", type=int, default=16, help="threads of the concurrent rows")
    parser.add_argument("--no-canned", action="store_true", help="skip the canned-peer rows")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    tune_gc()  # as the processor's own commands run: both clients in the process they serve
    run = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "botocore_signs_with_crt": botocore.compat.HAS_CRT, "requests": args.requests, "rounds": args.rounds,
        "rows": []}
    table = f"client-cpu-{run}"
    with LocalEmulator() as emulator:
        clients = both_clients(emulator.endpoint)
        ensure_table(clients["boto3"], table)
        for scenario in scenarios(run):
            scenario.setup(clients["boto3"], table)
        results["floor_ms"] = floor(emulator.endpoint, table, args.requests)
        print(f"floor (a pre-signed request's round trip): {results['floor_ms']:.3f} ms CPU", flush=True)
        canned = {scenario.name: recorded(emulator.endpoint, table, scenario) for scenario in scenarios(run)}
        for threads in (1, args.threads):
            for scenario in scenarios(run):
                row = measure("emulator", clients, table, scenario, threads, args)
                results["rows"].append(row)
        if not args.no_canned:
            for threads in (1, args.threads):
                for scenario in scenarios(run):
                    with CannedPeer(canned[scenario.name]) as peer:
                        row = measure("canned", both_clients(peer.endpoint), table, scenario, threads, args)
                    results["rows"].append(row)
    print_table(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


def measure(against: str, clients: dict[str, Any], table: str, scenario: Scenario, threads: int,
            args: argparse.Namespace) -> dict[str, Any]:
    figures = compare(clients, table, scenario, args.requests, args.rounds, threads)
    row = {"against": against, "scenario": scenario.name, "threads": threads, **{f"{name} ms": value
                                                                                 for name, value in figures.items()}}
    row["ratio"] = round(figures["boto3"] / figures["data plane"], 1)
    print(f"{against:9s} {scenario.name:36s} {threads:>2} threads: boto3 {figures['boto3']:.3f} ms, "
          f"data plane {figures['data plane']:.3f} ms", flush=True)
    return row


def print_table(results: dict[str, Any]) -> None:
    print()
    print(f"client CPU per request (ms), median of {results['rounds']} x {results['requests']} requests; "
          f"{results['machine']}; botocore signs with the CRT: {results['botocore_signs_with_crt']}")
    print(f"floor (pre-signed request, pooled round trip to the emulator): {results['floor_ms']:.3f} ms")
    print(f"{'against':9s} {'request':36s} {'threads':>7s} {'boto3':>8s} {'data plane':>11s} {'ratio':>6s}")
    for row in results["rows"]:
        print(f"{row['against']:9s} {row['scenario']:36s} {row['threads']:>7} {row['boto3 ms']:>8.3f} "
              f"{row['data plane ms']:>11.3f} {row['ratio']:>5.1f}x")


if __name__ == "__main__":
    sys.exit(main())
