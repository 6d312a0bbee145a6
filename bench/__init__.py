"""`processor bench`: this processor side by side with the patterns contact centers run today.

Every system processes the same generated Genesys storm against the same local DynamoDB (the
emulator, metered: requests and write units are counted where DynamoDB would bill them), and is
judged against the same truth:

  workload  the deliveries, labelled (duplicate or not), and the truth they imply
  peers     naive, check_then_write, timestamp_condition, powertools: two concurrent consumers each
  ours      this_live, this_catchup, this_kcl
  checks    leaked duplicates, stale overwrites (from write histories), lost updates and mismatches
            (from the final table)
  system    one system in its own process, so its peak RSS is its own
  run       the whole comparison and the growth curve; report renders the table, chart and README
"""
from __future__ import annotations

PEERS = ("naive", "check_then_write", "timestamp_condition", "powertools")
OURS = ("this_live", "this_catchup", "this_kcl")
SYSTEMS = PEERS + OURS


def metrics_table_of(table: str) -> str:
    """The metrics table beside a system's conversation table."""
    return f"{table}-metrics"
