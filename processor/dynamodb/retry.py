"""Retrying AWS calls that failed for reasons that pass: throttling, 5xx, dropped connections.

Exponential backoff with full jitter (sleep a uniform random time up to base * 2^attempt, capped),
which spreads retries of many writers instead of synchronising them on a hot partition (I9).

Throttling is retried for as long as it lasts: it says DynamoDB is there and busy, and giving up
would only restart the task onto an empty disk that must rehydrate every shard from the same
throttled table. KCL renews the lease on its own threads meanwhile; should the lease move anyway,
the conditional writes keep a late writer harmless (I5) and its checkpoint is refused. Other
transient failures (5xx, connections) get a bounded number of attempts, so a wrong endpoint or a
lasting outage fails loudly instead of hanging.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Callable, Iterator, TypeVar

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

T = TypeVar("T")
log = logging.getLogger("processor.dynamodb.retry")

THROTTLING_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling",
    "RequestLimitExceeded", "LimitExceededException",
})
RETRYABLE_CODES = THROTTLING_CODES | {"InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}
#: how often a call that keeps being throttled says so in the log
THROTTLE_LOG_SECONDS = 60.0


class GaveUp(RuntimeError):
    """A call still failed after every attempt: the flush must fail so nothing is checkpointed."""


def is_retryable(error: Exception) -> bool:
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in RETRYABLE_CODES or status >= 500
    return False


def is_throttling(error: Exception) -> bool:
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code", "") in THROTTLING_CODES


def full_jitter(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 32))))


def with_retries(call: Callable[[], T], *, attempts: int = 10, base: float = 0.05, cap: float = 5.0,
                 on_retry: Callable[[Exception], None] | None = None) -> T:
    """Run `call`, retrying retryable failures (throttling without end, others `attempts` times in
    all); other errors propagate at once."""
    failures = 0  # transient failures other than throttling
    throttled_since: float | None = None
    next_log = THROTTLE_LOG_SECONDS
    for attempt in itertools.count():
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified just below
            if not is_retryable(error):
                raise
            if is_throttling(error):
                now = time.monotonic()
                throttled_since = now if throttled_since is None else throttled_since
                if now - throttled_since >= next_log:
                    log.warning("DynamoDB has throttled this call for %.0f s; still retrying", now - throttled_since)
                    next_log += THROTTLE_LOG_SECONDS
            else:
                failures += 1
                if failures >= attempts:
                    raise GaveUp(f"gave up after {failures} attempts: {type(error).__name__}") from error
            if on_retry is not None:
                on_retry(error)
            time.sleep(full_jitter(attempt, base, cap))
    raise AssertionError("unreachable")


def until_processed(send: Callable[[dict], dict], request: dict, leftover: str, *, base: float = 0.05,
                    cap: float = 5.0, on_leftover: Callable[[], None] | None = None) -> Iterator[dict]:
    """Send a batch request and re-send its unprocessed part (`leftover`) with backoff until none.

    BatchGetItem and BatchWriteItem succeed partially under throttling instead of failing; the
    part they hand back is retried like any throttled call. Yields every response.
    """
    attempt = 0
    while request:
        response = send(request)
        yield response
        request = response.get(leftover) or {}
        if request:
            if on_leftover is not None:
                on_leftover()
            time.sleep(full_jitter(attempt, base, cap))
            attempt += 1
