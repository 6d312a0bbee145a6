"""The local emulator process: moto (Kinesis, DynamoDB) behind hypercorn.

Run as `python -m devstack.emulator.server --port N`. Why each piece:
  * hypercorn speaks HTTP/1.1 (boto3) and h2c, HTTP/2 without TLS, which KCL's Kinesis client
    insists on;
  * one lock around moto, which is not thread-safe (concurrent puts lose records);
  * the Kinesis resharding patch (see kinesis_patch), and a rollback for DynamoDB transactions
    that copies only the items they name (see dynamodb_patch);
  * optional throttling faults (`--throttle FRACTION`): a share of DynamoDB data-plane requests
    answered with ProvisionedThroughputExceededException, to test the retry path for real;
  * an optional meter (`--meter`): DynamoDB requests and write units per table, served as JSON
    on `GET /_meter?table=NAME` (see meter).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import re
import signal
import threading

from hypercorn.asyncio import serve
from hypercorn.config import Config
from moto.server import DomainDispatcherApplication, create_backend_app

from devstack.emulator import dynamodb_patch, kinesis_patch
from devstack.emulator.meter import Meter

THROTTLED_ACTIONS = {"PutItem", "UpdateItem", "GetItem", "BatchGetItem", "BatchWriteItem", "DeleteItem",
                     "TransactWriteItems"}


def moto_stored_size(region: str, table_name: str, attributes: dict) -> int:
    """The size moto gives the stored item with these key attributes (0 when there is none)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].tables.get(table_name)
    if table is None or table.hash_key_attr not in attributes:
        return 0
    range_key = DynamoType(attributes[table.range_key_attr]) if table.range_key_attr else None
    try:
        item = table.get_item(DynamoType(attributes[table.hash_key_attr]), range_key)
    except Exception:  # noqa: BLE001 - a malformed key: moto answers the request with the error
        return 0
    return item.size() if item is not None else 0


def moto_hash_key(region: str, table_name: str) -> str | None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][region].tables.get(table_name)
    return table.hash_key_attr if table is not None else None


def _region(environ) -> str:
    scope = re.search(r"Credential=[^/]+/\d+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    return scope.group(1) if scope else "us-east-1"


def build_app(throttle: float, seed: int | None, meter: bool = False):
    dispatcher = DomainDispatcherApplication(create_backend_app)
    services: dict[str, object] = {}
    lock = threading.Lock()
    chance = random.Random(seed)

    def moto_app(environ, start_response):
        # moto looks the backend up anew on every request (~1 ms); JSON-protocol services name
        # themselves in X-Amz-Target, so remember the answer per service.
        service = environ.get("HTTP_X_AMZ_TARGET", "").partition(".")[0]
        if not service:
            return dispatcher(environ, start_response)
        app = services.get(service)
        if app is None:
            app = services[service] = dispatcher.get_application(environ)
        return app(environ, start_response)

    usage = Meter()

    def metered(environ, start_response, action: str):
        region = _region(environ)
        stored_size = lambda table, key: moto_stored_size(region, table, key)  # noqa: E731
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        request = json.loads(body or b"{}")
        status = []

        def capture(status_line, headers, exc_info=None):
            status.append(int(status_line.split()[0]))
            return start_response(status_line, headers, exc_info)

        touched = usage.before(action, request, stored_size)
        response = list(moto_app(environ, capture))
        usage.after(action, request, touched, status[0], b"".join(response), stored_size,
                    lambda table: moto_hash_key(region, table))
        return response

    def report(environ, start_response):
        body = usage.report_json(environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def app(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if meter and environ.get("PATH_INFO") == "/_meter":
            with lock:
                return report(environ, start_response)
        if throttle and target.startswith("DynamoDB_") and target.split(".")[-1] in THROTTLED_ACTIONS:
            with lock:
                throttled = chance.random() < throttle
            if throttled:
                body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                                   "message": "injected by the local emulator"}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"),
                                                   ("Content-Length", str(len(body)))])
                return [body]
        with lock:
            if meter and target.startswith("DynamoDB_"):
                return metered(environ, start_response, target.split(".")[-1])
            return list(moto_app(environ, start_response))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--throttle", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--meter", action="store_true", help="count DynamoDB requests and write units")
    args = parser.parse_args()
    kinesis_patch.apply()
    dynamodb_patch.apply()

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.h2_max_inbound_frame_size = 2 ** 24 - 1
    config.wsgi_max_body_size = 64 * 1024 * 1024
    config.keep_alive_timeout = 3600
    config.graceful_timeout = 1.0  # idle keep-alive clients must not hold a stop for seconds

    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(build_app(args.throttle, args.seed, args.meter), config, mode="wsgi", shutdown_trigger=stop.wait)

    asyncio.run(run())


if __name__ == "__main__":
    main()
