"""The KCL child as a real process (`processor kcl`) driven over the MultiLang protocol on its
stdin/stdout, against moto over HTTP: every scenario of tests/scenarios/kcl_child.py. tests/unit
runs the same ones on amazon_kclpy's KCLProcess over in-memory streams and the twin.

stdout is the protocol channel (I11): every line the child writes there must be a protocol message.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scenarios.kcl_child import child_config, scenarios


class Child:
    """A `processor kcl` process and the daemon's side of the conversation."""

    def __init__(self, config: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "processor.cli", "kcl", "--config", str(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.checkpoints: list[str | None] = []

    def send(self, message: dict) -> dict:
        self._write(message)
        while True:
            line = self.process.stdout.readline()
            assert line, f"child closed stdout; stderr: {self.process.stderr.read()[-6000:]}"
            if not line.strip():
                continue  # amazon_kclpy frames each message with blank lines; the daemon skips them
            reply = json.loads(line)  # anything else on stdout breaks the protocol (I11)
            if reply["action"] == "checkpoint":
                self.checkpoints.append(reply["sequenceNumber"])
                self._write({"action": "checkpoint", "sequenceNumber": reply["sequenceNumber"],
                             "subSequenceNumber": reply.get("subSequenceNumber"), "error": None})
                continue
            assert reply == {"action": "status", "responseFor": message["action"]}
            return reply

    def exit_after(self, message: dict) -> tuple[int | None, str, str]:
        self._write(message)
        code = self.process.wait(timeout=60)
        return code, self.process.stdout.read(), self.process.stderr.read()

    def close(self) -> tuple[int, str]:
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        return code, self.process.stderr.read()

    def _write(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()


@pytest.fixture
def config(tmp_path, emulator, dynamodb) -> Path:
    return child_config(tmp_path, dynamodb, emulator.endpoint)


@pytest.mark.parametrize("scenario", scenarios.params())
def test_kcl_child_scenario_holds(scenario, dynamodb, config):
    scenario(Child, dynamodb, config)


def test_the_child_logs_whether_its_hot_path_is_compiled(config):
    """./dev's editable install runs the sources (the image's wheel: tests/server/test_compiled.py)."""
    code, stderr = Child(config).close()
    assert code == 0 and "record processor starting: hot path pure Python (not compiled)" in stderr
