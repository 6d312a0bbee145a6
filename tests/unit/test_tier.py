"""The unit tier keeps its promise: nothing here can start a server, Java or the processor."""
from __future__ import annotations

import subprocess
import sys

import pytest

from devstack.emulator import LocalEmulator
from tests.twins import MemoryDynamoDB


def test_starting_the_local_emulator_fails_loudly():
    with pytest.raises(pytest.fail.Exception, match="move this test to tests/server"):
        LocalEmulator().start()
    with pytest.raises(pytest.fail.Exception):
        with LocalEmulator():
            pass


@pytest.mark.parametrize("command", [[sys.executable, "-m", "processor.cli", "kcl"], "processor replay events.jsonl",
                                     [sys.executable, "-m", "devstack.emulator.server"], ["java", "-version"]])
def test_starting_the_processor_the_stack_or_java_fails_loudly(command):
    with pytest.raises(pytest.fail.Exception, match="may not start a process"):
        subprocess.run(command, shell=isinstance(command, str))


def test_other_programs_still_run():
    """cfn-lint, for one, is a subprocess the unit tier needs."""
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True).stdout == "ok\n"


def test_dynamodb_is_the_in_memory_twin(dynamodb):
    assert isinstance(dynamodb, MemoryDynamoDB)
