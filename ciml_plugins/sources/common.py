"""Helpers the built-in result sources share: time handling and balanced selection."""

import datetime as dt
import itertools

from ciml.records import FAILED


def as_utc(value):
    """An aware UTC datetime from a naive (taken as UTC) or aware one, or ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def naive_utc(value):
    """A naive UTC datetime, as subunit2sql's DATETIME columns hold them."""
    value = as_utc(value)
    return None if value is None else value.replace(tzinfo=None)


def interleave(failed, passed, limit=None):
    """Alternate failed and passed runs, then drain whichever is left.

    The original ciml interleaved failures and passes so that a limited
    cache holds both classes even when failures are rare.  Both inputs are
    iterators, consumed lazily, so memory stays flat.
    """
    sentinel = object()
    count = 0
    streams = [iter(failed), iter(passed)]
    while streams:
        for stream in list(streams):
            if limit is not None and count >= limit:
                return
            item = next(stream, sentinel)
            if item is sentinel:
                streams.remove(stream)
                continue
            count += 1
            yield item


def take(iterable, limit):
    """At most ``limit`` items (all when ``None``)."""
    return iter(iterable) if limit is None else itertools.islice(iterable, limit)


def is_failed(run):
    return run.status == FAILED
