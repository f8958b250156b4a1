"""A tiny in-memory raw cache for dataset tests: same reading API as RawCache."""

import datetime as dt

import numpy as np
import pandas as pd

from ciml.errors import MetricsUnavailable, NotFoundError
from ciml.records import RunRecord

COLUMNS_072 = ["usr", "sys", "idl", "used", "buff", "cach", "free", "recv", "send"]
COLUMNS_073 = ["usr", "sys", "idl", "used", "free", "buff", "cach", "recv", "send"]


def make_frame(rows, seed, start, columns=COLUMNS_072, failed=False):
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=rows, freq="s", tz="UTC")
    data = {c: rng.random(rows) * (i + 1) * (3.0 if failed else 1.0)
            for i, c in enumerate(columns)}
    return pd.DataFrame(data, index=index, dtype="float64")


class FakeCache:
    def __init__(self):
        self.records, self.frames, self.bad = {}, {}, {}

    def add(self, run, frame=None, bad=None):
        self.records[run.id] = run
        if bad:
            self.bad[run.id] = bad
        else:
            self.frames[run.id] = frame

    def runs(self, build_name=None):
        out = [r for r in self.records.values()
               if build_name is None or r.build_name == build_name]
        return sorted(out, key=lambda r: (r.start, r.id))

    def record(self, run_id):
        try:
            return self.records[run_id]
        except KeyError:
            raise NotFoundError(run_id) from None

    def frame(self, run_id):
        if run_id in self.bad:
            raise MetricsUnavailable("corrupt-cache", self.bad[run_id])
        return self.frames[run_id].copy()


PROVIDERS = ["rax-dfw", "rax-ord", "ovh-bhs1", "ovh-gra1", "vexxhost-ca-ymq-1",
             "inap-mtl01", "limestone-regionone"]


def fake_history(n=40, rows=(100, 300), seed=0, build_name="tempest-full", bad=()):
    rng = np.random.default_rng(seed)
    cache = FakeCache()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        failed = bool(rng.random() < 0.4)
        start = t0 + dt.timedelta(hours=i * 3 + int(rng.integers(0, 2)))
        run = RunRecord(id=f"run-{i:04d}", build_name=build_name,
                        status="failed" if failed else "passed", start=start,
                        source="fake",
                        metadata={"node_provider": PROVIDERS[i % len(PROVIDERS)]})
        columns = COLUMNS_072 if i % 2 else COLUMNS_073
        if i in bad:
            cache.add(run, bad="series.npz is unreadable")
        else:
            cache.add(run, make_frame(int(rng.integers(*rows)), seed * 1000 + i,
                                      start, columns, failed))
    return cache
