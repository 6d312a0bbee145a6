"""The end-to-end tier: the real KCL MultiLangDaemon (Java) running this processor against the
local stack. Every test here is marked `e2e` (see README.md for what moves here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import mark_directory


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_directory(items, Path(__file__).parent, pytest.mark.e2e)
