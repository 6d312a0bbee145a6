"""I12 and I13 under faults in the unit tier: the scenarios of tests/server/test_metrics_exact.py
(a zombie, a split, late events, writes per key per flush, and a crash at the steps of a flush that
matter most, then replay) run here on the in-memory twin, as the server tier runs them all on moto
over HTTP."""
import pytest

from tests.server import test_metrics_exact as on_server
from tests.server.test_metrics_exact import *  # noqa: F401,F403 - the same tests, on this tier's `dynamodb`

del test_a_crash_at_any_step_of_a_flush_then_replay_gives_the_clean_metrics  # noqa: F821 - a subset below


@pytest.mark.parametrize("crash, new_owner", [(crash, False) for crash in on_server.CRASHES[3:5]]
                         + [(crash, True) for crash in on_server.NEW_OWNER_CRASHES])
def test_a_crash_between_transactions_or_before_the_commit_then_replay_gives_the_clean_metrics(
        crash, new_owner, dynamodb, tmp_path, small_transactions):
    on_server.test_a_crash_at_any_step_of_a_flush_then_replay_gives_the_clean_metrics(
        crash, new_owner, dynamodb, tmp_path, small_transactions)
