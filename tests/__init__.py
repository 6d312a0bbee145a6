"""The test suite, in tiers by directory: unit (no server), server (moto over HTTP), e2e (the real KCL daemon)."""
