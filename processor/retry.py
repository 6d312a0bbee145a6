"""Retrying AWS calls that failed for reasons that pass: throttling, 5xx, dropped connections.

Exponential backoff with full jitter (sleep a uniform random time up to base * 2^attempt, capped),
which spreads retries of many writers instead of synchronising them on a hot partition (I9).
"""
from __future__ import annotations

import random
import time
from typing import Callable, Iterator, TypeVar

from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

T = TypeVar("T")

RETRYABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling",
    "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable", "LimitExceededException",
    "TransactionInProgressException",
})


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


def full_jitter(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0, min(cap, base * (2 ** attempt)))


def with_retries(call: Callable[[], T], *, attempts: int = 10, base: float = 0.05, cap: float = 5.0,
                 on_retry: Callable[[Exception], None] | None = None) -> T:
    """Run `call`, retrying retryable failures; other errors propagate at once."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - classified just below
            if not is_retryable(error):
                raise
            if attempt == attempts - 1:
                raise GaveUp(f"gave up after {attempts} attempts: {type(error).__name__}") from error
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
