"""ResultSource.matches: the one local check of a listing's selection."""

import datetime as dt

import pytest

from ciml.base import ResultSource
from ciml.records import RunRecord

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def _run(start=T0, status="failed", **metadata):
    return RunRecord(id="r1", build_name="job", status=status, artifacts_url="",
                     start=start, metadata=metadata)


@pytest.mark.parametrize("run, selection, expected", [
    (_run(), {}, True),
    (_run(), {"status": "failed"}, True),
    (_run(), {"status": "passed"}, False),
    (_run(), {"since": T0}, True),                       # since is inclusive
    (_run(), {"since": T0 + dt.timedelta(seconds=1)}, False),
    (_run(), {"until": T0}, False),                      # until is exclusive
    (_run(), {"until": T0 + dt.timedelta(seconds=1)}, True),
    (_run(start=None), {"since": T0}, False),            # no start: outside any window
    (_run(start=None), {"until": T0}, False),
    (_run(start=None), {}, True),
    (_run(queue="gate"), {"filters": {"queue": "gate"}}, True),
    (_run(queue="gate"), {"filters": {"queue": "check"}}, False),
    (_run(), {"filters": {"queue": "gate"}}, False),      # a missing key never matches
])
def test_matches(run, selection, expected):
    assert ResultSource.matches(run, **selection) is expected
