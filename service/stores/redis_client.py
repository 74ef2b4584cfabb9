"""The redis-py client of a Redis store: bounded waits and a bounded retry, so an outage fails a request
within seconds (answered 503 + Retry-After by the API) instead of holding it in the client."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.core.settings import RedisClientSettings

MAX_BACKOFF_S = 1.0
HEALTH_CHECK_S = 30  # a connection idle this long is PINGed before use: one left over from a restart is replaced


def redis_client(url: str, options: RedisClientSettings) -> redis.Redis:
    # Only connection errors are retried (see RedisClientSettings): a refused or reset connection is worth
    # one more try on a fresh one; a timeout means Redis is stuck and the caller should hear so now.
    retry = Retry(
        ExponentialBackoff(cap=MAX_BACKOFF_S, base=options.retry_backoff_s),
        options.retries,
        supported_errors=(redis.exceptions.ConnectionError,),
    )
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=options.connect_timeout_s,
        socket_timeout=options.timeout_s,
        retry=retry,
        health_check_interval=HEALTH_CHECK_S,
    )
