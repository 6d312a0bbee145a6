"""The shard engine on the in-memory twin: every scenario of tests/scenarios/engine.py (I1, I2, I4 a
crash at each step of a flush then replay, I6, I7, I9). tests/server runs the same ones on moto."""
from __future__ import annotations

import pytest

from tests.scenarios.engine import scenarios


@pytest.mark.parametrize("scenario", scenarios.params())
def test_engine_scenario_holds(scenario, dynamodb, table, tmp_path):
    scenario(dynamodb, table, tmp_path)
