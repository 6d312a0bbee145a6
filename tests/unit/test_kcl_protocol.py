"""The KCL child in this process, driven over the MultiLang protocol as amazon_kclpy's own tests
drive a record processor: `KCLProcess(ShardProcessor(settings), input_file=..., output_file=...,
error_file=...)` over in-memory streams, DynamoDB the twin. Every scenario of
tests/scenarios/kcl_child.py (tests/server runs them on a real child process and moto), and what
only a child in memory can show: checkpoint errors as the daemon answers them, and that the check
of stdout (I11) catches a stray line.

The child is given its DynamoDB client (the twin) through ShardProcessor's `dynamodb` factory.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
from amazon_kclpy import kcl

from processor import kcl as child_module
from processor.config import load_settings
from processor.kcl import CHECKPOINT_ATTEMPTS, ShardProcessor
from tests.conftest import detail_event
from tests.scenarios.kcl_child import Start, child_config, initialize, process, scenarios

PROTOCOL_ACTIONS = ("status", "checkpoint")


class MemoryChild:
    """`processor kcl` in this process, and the daemon's side of the conversation. The child reads
    `stdin` (the daemon's lines are appended to it as the daemon would send them) and writes its
    stdout through this object, which keeps it in `stdout` and answers each checkpoint the child
    asks for (with the next of `checkpoint_errors`, else accepting it). While the child runs,
    sys.stdout is the protocol channel too, and sys.stderr and the log (INFO, as `run_child` sets
    it) go to `stderr`."""

    def __init__(self, config: Path, dynamodb: Any, checkpoint_errors: Sequence[str] = ()):
        self.checkpoints: list[str | None] = []
        self.stdin = io.StringIO()  # everything the daemon sent
        self.stdout, self.stderr = io.StringIO(), io.StringIO()  # everything the child wrote
        self.foreign: list[str] = []  # stdout lines that are no protocol message (I11)
        self._errors = list(checkpoint_errors)
        self._statuses: list[dict] = []
        self._partial = ""
        shard = ShardProcessor(load_settings(str(config)), dynamodb=lambda _: dynamodb)
        self._kcl = kcl.KCLProcess(shard, input_file=self.stdin, output_file=self, error_file=self.stderr)

    def send(self, message: dict) -> dict:
        self._run(message)
        assert self._statuses == [{"action": "status", "responseFor": message["action"]}], self._statuses
        return self._statuses.pop()

    def exit_after(self, message: dict) -> tuple[int | None, str, str]:
        """The exit status is that of the SystemExit the child raised (None: it raised none)."""
        written = self.stdout.tell()
        try:
            self._run(message)
        except SystemExit as exit:
            return exit.code, self.stdout.getvalue()[written:], self.stderr.getvalue()
        return None, self.stdout.getvalue()[written:], self.stderr.getvalue()

    def close(self) -> tuple[int, str]:
        self._run(None)  # end of input: the child's loop returns
        return 0, self.stderr.getvalue()

    def _run(self, message: dict | None) -> None:
        if message is not None:
            self._feed(message)
        with self._as_a_process():
            self._kcl.run()
        assert not self.foreign, f"stdout carried lines that are no protocol message (I11): {self.foreign}"

    @contextlib.contextmanager
    def _as_a_process(self) -> Iterator[None]:
        root, handler = logging.getLogger(), logging.StreamHandler(self.stderr)
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(self), contextlib.redirect_stderr(self.stderr):
                yield
        finally:
            root.removeHandler(handler)
            root.setLevel(level)

    def _feed(self, message: dict) -> None:
        """Append a line to the child's stdin, which it reads on from where it is."""
        reading = self.stdin.tell()
        self.stdin.seek(0, io.SEEK_END)
        self.stdin.write(json.dumps(message) + "\n")
        self.stdin.seek(reading)

    def write(self, text: str) -> int:
        """The child's stdout: each complete line is read as a protocol message."""
        self.stdout.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in filter(str.strip, lines):
            self._receive(line)
        return len(text)

    def flush(self) -> None:
        pass

    def _receive(self, line: str) -> None:
        message = protocol_message(line)
        if message is None:
            self.foreign.append(line)
        elif message["action"] == "status":
            self._statuses.append(message)
        else:
            self.checkpoints.append(message["sequenceNumber"])
            error = self._errors.pop(0) if self._errors else None
            self._feed({"action": "checkpoint", "sequenceNumber": message["sequenceNumber"],
                        "subSequenceNumber": message["subSequenceNumber"], "error": error})


def protocol_message(line: str) -> dict | None:
    """The message a line of the child's stdout carries, None if it is no protocol message."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get("action") in PROTOCOL_ACTIONS else None


@pytest.fixture
def start(dynamodb) -> Start:
    """Children of this test; their DynamoDB is the twin."""
    return functools.partial(MemoryChild, dynamodb=dynamodb)


@pytest.fixture
def config(tmp_path, dynamodb) -> Path:
    return child_config(tmp_path, dynamodb)


@pytest.mark.parametrize("scenario", scenarios.params())
def test_kcl_child_scenario_holds(scenario, start, dynamodb, config):
    scenario(start, dynamodb, config)


def test_every_line_on_stdout_is_a_protocol_message(start, config):
    """I11, over a whole lease: records with a bad one and PII, a flush, a hand-off, the lease lost."""
    child = start(config)
    child.send(initialize("shardId-000000000005"))
    child.send(process([detail_event("c1", "acd.start", 1, queueId="q", ani="tel:+15555550100"), b"{oops",
                        detail_event("c1", "user.start", 2, userId="a")], 1))
    child.send(process([detail_event("c1", "customer.end", 3)], 4))
    child.send({"action": "shutdownRequested"})
    child.send({"action": "leaseLost"})
    lines = [line for line in child.stdout.getvalue().splitlines() if line.strip()]
    assert [protocol_message(line)["action"] for line in lines] == [
        "status", "checkpoint", "status", "status", "checkpoint", "status", "status"]


def test_a_line_printed_on_stdout_is_caught_as_a_protocol_violation(start, config, monkeypatch):
    """The check behind every `send` has teeth: were the child to print (a debug line, a log
    handler on stdout), the daemon would read garbage."""
    monkeypatch.setattr(child_module.log, "info", lambda message, *args: print(message % args))
    with pytest.raises(AssertionError, match="I11"):
        start(config).send(initialize("shardId-000000000006"))


def three_records() -> dict:
    """A batch that reaches the settings' flush_records (3): flushed, then checkpointed at "3"."""
    return process([detail_event("c1", "acd.start", t, queueId=f"q{t}") for t in (1, 2, 3)], 1)


@pytest.mark.parametrize("errors, asked", [(("ThrottlingException", "ThrottlingException"), 3),
                                           (("ShutdownException",), 1)], ids=["throttled twice", "shutting down"])
def test_a_throttled_checkpoint_is_retried_and_one_refused_at_shutdown_is_let_go(start, config, errors, asked,
                                                                                  no_backoff):
    child = start(config, checkpoint_errors=errors)
    child.send(initialize("shardId-000000000003"))
    child.send(three_records())  # the status comes back: the batch is done
    assert child.checkpoints == ["3"] * asked


@pytest.mark.parametrize("errors", [("InvalidStateException",), ("ThrottlingException",) * CHECKPOINT_ATTEMPTS],
                         ids=["invalid state", "throttled for good"])
def test_a_checkpoint_kcl_refuses_for_good_exits_the_child(start, config, errors, no_backoff):
    """No status for the batch: KCL retries it from the last checkpoint on a new child."""
    child = start(config, checkpoint_errors=errors)
    child.send(initialize("shardId-000000000003"))
    code, stdout, stderr = child.exit_after(three_records())
    assert code == 1 and "status" not in stdout
    assert child.checkpoints == ["3"] * len(errors)
    assert "exiting so KCL retries from the last checkpoint" in stderr
