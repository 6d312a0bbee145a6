"""Stream analytics: queue and agent metrics per interval and live gauges, exactly once (I12) and
without hot partitions (I13). See ANALYTICS in INVARIANTS.md.

- `sessions`: how a detail event becomes a session register of its conversation (pure);
- `contribution`: what one conversation's state adds to every cell, and the delta between two (pure);
- `layout`: the metrics table's keys and items (write-sharded partials, the directory readers use);
- `reader`: the cells summed over their partials, for `processor queues` and `--export-metrics`.
"""
