"""The unit tier: no server, no Java, no subprocess of the processor; it runs alone in seconds.

DynamoDB here is the in-memory twin (tests/twins.py): the `dynamodb` fixture is a fresh
`MemoryDynamoDB`, so the scenarios of tests/scenarios run on it as they run on moto in
tests/server. The tier is guarded: starting the local emulator, a `processor` (or devstack,
bench) process or Java fails the test at once, saying where such a test belongs.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from devstack.emulator import LocalEmulator
from tests.twins import MemoryDynamoDB

#: what a unit test may not start: the modules of this repository (run with -m), and programs
FORBIDDEN_MODULES = ("processor", "devstack", "bench")
FORBIDDEN_PROGRAMS = ("processor", "java")


def forbidden(command: Any) -> bool:
    """Whether a subprocess command line runs the processor, the local stack, the benchmark or Java."""
    argv = shlex.split(command) if isinstance(command, str) else [os.fspath(part) for part in command]
    modules = [argv[i + 1] for i, part in enumerate(argv[:-1]) if part == "-m"]
    return (any(module.split(".")[0] in FORBIDDEN_MODULES for module in modules)
            or bool(argv) and Path(argv[0]).name in FORBIDDEN_PROGRAMS)


def refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"the unit tier may not {what}: move this test to tests/server (or tests/e2e)", pytrace=True)

    return refused


def guarded_popen(popen_init: Callable[..., None]) -> Callable[..., None]:
    def init(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        if forbidden(args):
            refuse(f"start a process of this repository or Java ({args!r})")()
        popen_init(self, args, *rest, **kwargs)

    return init


@pytest.fixture(scope="package", autouse=True)
def no_servers_no_processes() -> Iterator[None]:
    """Every unit test runs with the emulator and processor subprocesses refused."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalEmulator, "start", refuse("start the local emulator"))
        patch.setattr(subprocess.Popen, "__init__", guarded_popen(subprocess.Popen.__init__))
        yield


@pytest.fixture
def dynamodb() -> MemoryDynamoDB:
    """This tier's DynamoDB: the in-memory twin, fresh for each test."""
    return MemoryDynamoDB()


@pytest.fixture
def no_backoff(monkeypatch) -> None:
    """Retries without the waiting: `time.sleep`, which every backoff calls, returns at once."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
