"""`processor bench`: this processor side by side with the patterns contact centers run today.

Every system processes the same generated Genesys storm against the same local DynamoDB (the
emulator, metered: requests and write units are counted where DynamoDB would bill them), and is
judged against the same truth:

  workload  the deliveries, labelled (duplicate or not), and the truth they imply (conversation
            states and the metrics they add up to)
  peers     naive, check_then_write, timestamp_condition, powertools (conversation state), and
            add_per_event (queue metrics by an `ADD` per event): two concurrent consumers each
  ours      this_live, this_catchup, this_kcl (conversation state and metrics)
  checks    leaked duplicates, stale overwrites (from write histories), lost updates and mismatches
            (from the final table), metrics cells that differ from the truth
  system    one system in its own process, so its peak RSS and its CPU seconds are its own
  cpu       those CPU seconds: the process's own clock over the run, or the KCL daemon's tree from /proc
  run       the whole comparison and the growth curve; report renders the table, chart and README
"""
from __future__ import annotations

STATE_PEERS = ("naive", "check_then_write", "timestamp_condition", "powertools")  # conversation state only
METRICS_PEERS = ("add_per_event",)  # metrics only: no conversation table
PEERS = STATE_PEERS + METRICS_PEERS
OURS = ("this_live", "this_catchup", "this_kcl")
SYSTEMS = PEERS + OURS


def metrics_table_of(table: str) -> str:
    """The metrics table beside a system's conversation table."""
    return f"{table}-metrics"
