"""The local stack beside the production job, never in its image: a Kinesis + DynamoDB emulator
(moto over h2c, `emulator`), the KCL MultiLangDaemon run locally (`daemon`), a realistic Genesys
storm (`storm`) and `processor demo` (`demo`)."""
