"""The conversation-state stream processor: what ships, one module per stage of the data path.

    record bytes ─ decode ─▶ envelope ─ adapters ─▶ event ─ engine (limits: admit) ─▶
    reduce (dedup, reduce, collapse) ─▶ buffer ─ flush: dynamodb.sink ─▶ deadletters ─▶ store ─▶ checkpoint

`kcl` runs it for one shard lease under the MultiLangDaemon; `replay` runs it over a file;
`operate` and `cli` are the operators' side. The invariants it keeps (I1-I15) are defined in
INVARIANTS.md at the repository root and cited by number where they are enforced.
"""
