"""The embedded local stack: a moto server (Kinesis + DynamoDB) on a free loopback port.

    with LocalEmulator() as emulator:
        client = boto3.client("dynamodb", endpoint_url=emulator.endpoint, ...)

It runs in its own process (started and stopped by PID), so the emulator's CPU and lock never
sit inside the engine being measured or tested.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, Mapping, Sequence

import boto3

from processor.dynamodb.client import dynamodb_client

#: dummy credentials and region for the emulator (real deployments use the task role): the one
#: place they are written; processes get them through `environment()`, clients through `client()`
LOCAL_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
REGION = LOCAL_ENVIRONMENT["AWS_REGION"]


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalEmulator:
    def __init__(self, port: int | None = None, throttle: float = 0.0, seed: int | None = None,
                 log_path: str | None = None, meter: bool = False):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._args: Sequence[str] = ["--port", str(self.port), "--throttle", str(throttle)] + (
            ["--seed", str(seed)] if seed is not None else []) + (["--meter"] if meter else [])
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> LocalEmulator:
        try:
            import hypercorn  # noqa: F401
            import moto  # noqa: F401
        except ImportError as missing:
            raise EmulatorError(f"the local emulator needs the 'local' extra ({missing.name} is missing): "
                                "pip install 'conversation-state-processor[local]'") from None
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        env = self.environment()
        self._process = subprocess.Popen([sys.executable, "-m", "devstack.emulator.server", *self._args],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorError(f"the local emulator exited with {self._process.returncode}"
                                    + (f"; see {self._log_path}" if self._log_path else ""))
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise EmulatorError(f"the local emulator did not answer on {self.endpoint} within {timeout:.0f}s")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=1):
                return True
        except OSError:
            return False

    @staticmethod
    def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for a process that talks to the emulator (the daemon, its children)."""
        return dict(os.environ if base is None else base, **LOCAL_ENVIRONMENT)

    def client(self, service: str) -> Any:
        """A boto3 client of the emulator, credentials given explicitly (no environment needed);
        DynamoDB's with the processor's own client settings."""
        credentials = {"aws_access_key_id": LOCAL_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
                       "aws_secret_access_key": LOCAL_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"]}
        if service == "dynamodb":
            return dynamodb_client(self.endpoint, region=REGION, credentials=credentials)
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **credentials)

    def meter(self, *tables: str) -> dict:
        """Per table: request counts, write units and the applied PutItem items (needs `meter=True`)."""
        query = "&".join(f"table={table}" for table in tables)
        with urllib.request.urlopen(f"{self.endpoint}/_meter?{query}", timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
