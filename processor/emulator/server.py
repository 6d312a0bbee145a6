"""The local emulator process: moto (Kinesis, DynamoDB) behind hypercorn.

Run as `python -m processor.emulator.server --port N`. Why each piece:
  * hypercorn speaks HTTP/1.1 (boto3) and h2c, HTTP/2 without TLS, which KCL's Kinesis client
    insists on;
  * one lock around moto, which is not thread-safe (concurrent puts lose records);
  * the Kinesis resharding patch (see kinesis_patch);
  * optional throttling faults (`--throttle FRACTION`): a share of DynamoDB data-plane requests
    answered with ProvisionedThroughputExceededException, to test the retry path for real.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import threading

from hypercorn.asyncio import serve
from hypercorn.config import Config
from moto.server import DomainDispatcherApplication, create_backend_app

from processor.emulator import kinesis_patch

THROTTLED_ACTIONS = {"PutItem", "UpdateItem", "GetItem", "BatchGetItem", "BatchWriteItem", "DeleteItem"}


def build_app(throttle: float, seed: int | None):
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

    def app(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
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
            return list(moto_app(environ, start_response))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--throttle", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    kinesis_patch.apply()

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.h2_max_inbound_frame_size = 2 ** 24 - 1
    config.wsgi_max_body_size = 64 * 1024 * 1024
    config.keep_alive_timeout = 3600

    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(build_app(args.throttle, args.seed), config, mode="wsgi", shutdown_trigger=stop.wait)

    asyncio.run(run())


if __name__ == "__main__":
    main()
