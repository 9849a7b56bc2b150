"""When to renew and when to retry: the certmgr's policy, kept apart from how certificates are obtained.

Renewal happens at two thirds of a certificate's lifetime, or inside the window the CA suggests
through ACME Renewal Information (RFC 9773) when it offers one. Either way a random jitter spreads a
fleet's renewals so that certificates issued together do not all renew in the same minute.

Failures back off by :data:`RETRY_TABLE`; a CA's ``Retry-After`` (rate limits, maintenance) wins when
it asks for a longer wait. Some failures cannot be fixed by waiting: those wait for the admin to
change the request (:data:`NO_RETRY`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

#: Delay before the n-th retry of a failed order (the last entry repeats).
RETRY_TABLE: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=4),
    timedelta(hours=12),
)

#: The fraction of the lifetime after which a certificate is renewed without ARI.
RENEW_AT_FRACTION = 2 / 3

#: Jitter as a fraction of the lifetime (without ARI), spread after the renewal point.
JITTER_FRACTION = 0.03

#: The earliest a fresh certificate is renewed again: guards against a renewal storm when the local
#: clock runs ahead of the CA's (the computed renewal time would already have passed).
MIN_RENEWAL_DELAY = timedelta(hours=1)

#: A delay meaning "do not retry until the request changes".
NO_RETRY = timedelta(days=36500)


def utcnow() -> datetime:
    """The current time, aware UTC (the default clock; tests pass their own)."""
    return datetime.now(UTC)


def renewal_time(
    not_before: datetime,
    not_after: datetime,
    *,
    now: datetime,
    ari_window: tuple[datetime, datetime] | None = None,
    rng: Callable[[], float] = random.random,
) -> datetime:
    """When to renew a certificate valid from ``not_before`` to ``not_after``, issued at ``now``.

    With an ARI window the time is uniform inside it (as RFC 9773 asks); without one it is two
    thirds of the lifetime plus up to :data:`JITTER_FRACTION` of the lifetime. Never earlier than
    :data:`MIN_RENEWAL_DELAY` after ``now``.
    """
    if ari_window is not None:
        start, end = ari_window
        when = start + (end - start) * rng() if end > start else start
    else:
        lifetime = not_after - not_before
        when = not_before + lifetime * RENEW_AT_FRACTION + lifetime * JITTER_FRACTION * rng()
    return max(when, now + MIN_RENEWAL_DELAY)


def retry_delay(failures: int, retry_after: datetime | None = None, *, now: datetime) -> timedelta:
    """How long to wait after ``failures`` consecutive failures (1 = the first), honouring Retry-After."""
    delay = RETRY_TABLE[min(max(failures, 1), len(RETRY_TABLE)) - 1]
    if retry_after is not None and retry_after - now > delay:
        return retry_after - now
    return delay
