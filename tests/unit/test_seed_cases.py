"""The cases users hit today with check-then-write Lambdas (tests/scenarios/seed_cases.py), on the
in-memory twin. tests/server runs the same ones on moto."""
from __future__ import annotations

import pytest

from tests.scenarios.seed_cases import scenarios


@pytest.mark.parametrize("scenario", scenarios.params())
def test_seed_case_holds(scenario, dynamodb, table, tmp_path):
    scenario(dynamodb, table, tmp_path)
