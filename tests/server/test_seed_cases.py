"""The cases users hit today with check-then-write Lambdas (tests/scenarios/seed_cases.py), against
moto over HTTP, as tests/unit runs them on the twin."""
from __future__ import annotations

import pytest

from tests.scenarios.seed_cases import scenarios


@pytest.mark.parametrize("scenario", scenarios.params())
def test_seed_case_holds(scenario, dynamodb, table, tmp_path):
    scenario(dynamodb, table, tmp_path)
