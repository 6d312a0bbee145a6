"""The DynamoDB edge, one job per module: the item contract (`item`), conversation writes and reads
(`sink`), dead letters in a table (`deadletter_table`), retries (`retry`), clients and tables
(`client`)."""
