"""The server tier: a real DynamoDB API server (moto over HTTP, the session's `emulator` fixture of
tests/conftest.py) and the `processor` command in child processes against it, the KCL child
driven over the MultiLang protocol among them. Every test here is marked `server`.

The scenarios run on `split`: the data-plane client for the six calls a flush makes and boto3 for
the rest, as the processor splits them. boto3 as the data plane (where a proxy is configured) is
held to the same answers call by call in test_dataplane.py, and runs the throttling tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processor.dynamodb.client import data_plane_client
from processor.dynamodb.dataplane import DataPlaneClient

from tests.conftest import mark_directory


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_directory(items, Path(__file__).parent, pytest.mark.server)


#: the calls the processor makes on the data-plane client (boto3 makes the others)
DATA_PLANE = tuple(name for name in vars(DataPlaneClient) if not name.startswith("_") and name != "close")


@pytest.fixture(scope="session")
def data_plane(emulator) -> DataPlaneClient:
    client = data_plane_client(emulator.endpoint, region="us-east-1")
    assert isinstance(client, DataPlaneClient)
    return client


class Split:
    """boto3's client with the data-plane calls made by the data-plane client, as the processor
    splits them: one object for the scenarios, which were written for one client."""

    def __init__(self, control: Any, data_plane: Any):
        self._control, self._data_plane = control, data_plane

    def __getattr__(self, name: str) -> Any:
        return getattr(self._data_plane if name in DATA_PLANE else self._control, name)


@pytest.fixture
def split(dynamodb, data_plane) -> Split:
    return Split(dynamodb, data_plane)
