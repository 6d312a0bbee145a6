"""The shard engine against moto over HTTP: every scenario of tests/scenarios/engine.py (I1, I2, I4 a
crash at each step of a flush then replay, I6, I7, I9), as tests/unit runs them on the twin; on the
processor's own split of clients (conftest.py)."""
from __future__ import annotations

import pytest

from tests.scenarios.engine import scenarios


@pytest.mark.parametrize("scenario", scenarios.params())
def test_engine_scenario_holds(scenario, split, table, tmp_path):
    scenario(split, table, tmp_path)
