"""The server tier: a real DynamoDB API server (moto over HTTP, the session's `emulator` fixture of
tests/conftest.py) and the `processor` command in child processes against it, the KCL child
driven over the MultiLang protocol among them. Every test here is marked `server`."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import mark_directory


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_directory(items, Path(__file__).parent, pytest.mark.server)
