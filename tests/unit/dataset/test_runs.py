"""The build's compact run table, and the parts of a build that must not grow with the runs."""

import dataclasses
import datetime as dt

import numpy as np
import pytest
from fakes import fake_history  # conftest puts this folder on the path

from ciml.dataset import build as build_mod
from ciml.dataset import profile, runs, store
from ciml.dataset.length import length_of_spans, training_length
from ciml.records import RunRecord

UTC = dt.timezone.utc


def test_start_keys_sort_as_the_datetimes_do():
    starts = [None, dt.datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC),
              dt.datetime(2026, 1, 1, 12, 0, 0),  # naive: UTC
              dt.datetime(2026, 1, 1, 13, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
              dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
              dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]

    def as_datetime(start):
        if start is None:
            return dt.datetime.min.replace(tzinfo=UTC)
        return start if start.tzinfo else start.replace(tzinfo=UTC)

    by_datetime = sorted(range(len(starts)), key=lambda i: as_datetime(starts[i]))
    by_key = sorted(range(len(starts)), key=lambda i: runs.start_key(starts[i]))
    assert by_key == by_datetime
    assert runs.start_key(starts[2]) - runs.start_key(starts[3]) == 3600 * 1_000_000


def _records(ids_and_starts, **extra):
    return [RunRecord(id=run_id, build_name="job", status="passed" if i % 3 else "failed",
                      start=start, source="zuul" if i % 2 else "subunit2sql",
                      metadata={"node_provider": ["rax-dfw", "ovh-gra1"][i % 2]}, **extra)
            for i, (run_id, start) in enumerate(ids_and_starts)]


class _Listing:
    """A cache that lists runs and knows some of their index entries."""

    def __init__(self, records, infos):
        self.records, self.infos = records, infos

    def runs(self, build_name=None):
        return list(self.records)

    def info(self, run_id):
        if run_id not in self.infos:
            raise KeyError(run_id)
        return self.infos[run_id]


def test_scan_orders_labels_and_codes_as_the_records_say():
    t0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
    # Ids that sort differently as strings, as UTF-8 and as ASCII-folded text.
    ids = ["b", "a", "Z", "é-run", "e-run", "ω", "a/b#12", "a0"]
    starts = [t0, t0, None, t0 + dt.timedelta(seconds=1), t0, t0 - dt.timedelta(days=1),
              t0.replace(tzinfo=None), t0]
    records = _records(zip(ids, starts))
    infos = {r.id: {"columns": ["cpu_usr", "mem_used"] if i % 2 else ["cpu_usr"],
                    "first": "2026-03-01 00:00:00+00:00", "last": "2026-03-01 00:01:40+00:00",
                    "metric_source": {"name": "dstat", "params": {}}}
             for i, r in enumerate(records) if r.id != "a0"}
    table = runs.scan(_Listing(records, infos), "job", "node_provider",
                      human={"b": {"node_provider": "vexxhost-ca-ymq-1"}})

    def key(r):
        start = r.start or dt.datetime.min
        return (start if start.tzinfo else start.replace(tzinfo=UTC), r.id) if r.start \
            else (dt.datetime.min.replace(tzinfo=UTC), r.id)

    expected = sorted(records, key=key)
    assert table.run_ids() == [r.id for r in expected] == list(runs.decoded(table.ids))
    labels = [table.labels[c] for c in table.label]
    want = {r.id: "rax" if r.metadata["node_provider"] == "rax-dfw" else "ovh" for r in records}
    want["b"] = "vexxhost"  # what a person said wins
    assert labels == [want[r.id] for r in expected]
    assert table.passed.tolist() == [r.status == "passed" for r in expected]
    assert [table.sources[c] for c in table.source] == [r.source for r in expected]
    no_index = table.run_ids().index("a0")
    assert table.columns[no_index] == runs.UNKNOWN and np.isnan(table.span[no_index])
    assert table.provenance[no_index] == -1
    known = [i for i in range(len(table)) if i != no_index]
    assert (table.span[known] == 100.0).all()
    assert len(table.column_sets) == 2 and len(table.provenances) == 1
    part = table.take(np.array([1, 3]))
    assert part.run_ids() == [table.run_id(1), table.run_id(3)]
    assert list(part.iter_runs()) == [(table.run_id(1), None), (table.run_id(3), None)]


def test_scan_of_a_raw_cache_keeps_folders_only_on_an_object_store(data_path):
    from ciml.base import FetchedMetrics
    from ciml.cache import RawCache

    cache = RawCache(data_path)
    t0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
    frame = fake_history(n=1).frame("run-0000")
    for run in _records([(f"r{i}", t0 + dt.timedelta(minutes=-i)) for i in range(4)]):
        cache.store(run, FetchedMetrics(name="dstat.csv", data=b"x", url="file:///d.csv"),
                    frame)
    table = runs.scan(cache, "job", "status")
    assert table.run_ids() == ["r3", "r2", "r1", "r0"]
    assert table.folders is None
    assert len(table.column_sets) == 1 and not np.isnan(table.span).any()
    cache.remote = True  # what scan asks; the folders come from the catalog's rows
    table = runs.scan(cache, "job", "status")
    assert table.folder_names() == [cache.run_dir(i).name for i in table.run_ids()]


def test_features_from_column_sets_equal_features_run_by_run():
    history = fake_history(n=30, bad=(4, 7))
    history.frames["run-0003"] = history.frames["run-0003"][["usr"]]
    history.frames["run-0009"] = history.frames["run-0009"].rename(
        columns=lambda c: "x_" + c)
    step = build_mod.make_step({"name": "filter", "params": {"regex": "^(usr|sys|used)"}})
    ids = [r.id for r in history.runs()]
    one_by_one = build_mod.select_features(history, ids, step)
    assert one_by_one["unreadable"] == ["run-0004", "run-0007"]
    assert one_by_one["unmatched"] == ["run-0009"]
    assert one_by_one["columns"] == ["usr"] and set(one_by_one["dropped"]) == {"sys", "used"}
    sets = runs.Codes()
    codes = [build_mod._columns_code(history, i, sets) for i in ids]
    by_sets = build_mod.select_features_by_sets(codes, sets.values, step)
    assert by_sets["columns"] == one_by_one["columns"]
    assert by_sets["dropped"] == one_by_one["dropped"]
    assert [ids[i] for i in by_sets["unmatched"]] == one_by_one["unmatched"]
    assert [ids[i] for i in by_sets["unreadable"]] == one_by_one["unreadable"]
    assert by_sets["runs"] == one_by_one["runs"] == 27


def test_length_of_spans_is_the_training_length(history):
    ids = [r.id for r in history.runs()]
    spans = [(history.frame(i).index[-1] - history.frame(i).index[0]).total_seconds()
             for i in ids if i != "run-0005"]
    for interval in (None, "10s", "1min"):
        assert length_of_spans(spans + [np.nan, -1.0], interval) == \
            training_length(history, ids, interval)


@pytest.mark.parametrize("reference", [None, "some"])
def test_the_streamed_profile_is_the_whole_matrix_profile_to_the_bit(reference):
    rng = np.random.default_rng(7)
    for chunk in (1, 7, 256, 5000):
        X = (rng.normal(size=(1203, 12, 5)) * 40).astype("float32")
        lengths = rng.integers(1, 13, size=1203)
        mask = rng.random(1203) < 0.6 if reference else None
        summaries = profile.summarize(X, lengths, "time")
        if mask is not None:
            summaries = summaries[mask]
        center = summaries.mean(axis=0)
        scale = np.maximum(summaries.std(axis=0), profile.MIN_SCALE)
        z = profile._z({"center": center.tolist(), "scale": scale.tolist()}, summaries)
        scores = np.quantile(profile._scores(z), np.linspace(0, 1, profile.QUANTILES))
        got = profile.fit_profile(X, lengths, "time", None, list("abcde"), chunk=chunk,
                                  reference=mask)
        assert got["center"] == center.tolist()
        assert got["scale"] == scale.tolist()
        assert got["scores"] == scores.tolist()


def test_small_arrays_written_a_block_at_a_time_make_the_same_dataset(data_path, history,
                                                                       monkeypatch):
    def build(name):
        return build_mod.build_dataset(data_path, name, "tempest-full", cache=history,
                                       progress=False, sample_interval="10s", seed=2)

    whole = build("whole")
    # Blocks of 4 runs: every split's labels, ids and lengths go out in several writes.
    monkeypatch.setattr(store, "MIN_SMALL_CHUNK", 4)
    monkeypatch.setattr(store, "MAX_CHUNK_EXAMPLES", 4)
    blocks = build("blocks")
    # Smaller chunks of X change the order in which the scaler sums, not the runs.
    assert blocks["splits"] == whole["splits"]
    for split, count in whole["splits"].items():
        a = store.open_split(data_path.dataset("whole"), split)
        b = store.open_split(data_path.dataset("blocks"), split)
        for name in ("y", "ids", "length"):
            assert np.array_equal(a[name][...], b[name][...]), (split, name)
        assert b["ids"].chunks[0] == 4 and count > 4


def test_verify_finds_ids_that_differ_in_a_later_block(data_path, history, monkeypatch):
    from ciml.errors import CimlError

    monkeypatch.setattr(store, "MIN_SMALL_CHUNK", 4)
    monkeypatch.setattr(store, "MAX_CHUNK_EXAMPLES", 4)
    summary = build_mod.build_dataset(data_path, "ds", "tempest-full", cache=history,
                                      progress=False, sample_interval="10s")
    path = data_path.dataset("ds")
    ids = {s: store.read_all(store.open_split(path, s)["ids"]) for s in summary["splits"]}
    counts = summary["splits"]
    store.verify(path, counts, ids)
    # UTF-8 bytes, as a build holds them.
    store.verify(path, counts, {s: np.array([i.encode() for i in v], dtype="S")
                                for s, v in ids.items()})
    changed = dict(ids, training=ids["training"].copy())
    changed["training"][-1] = "someone-else"
    with pytest.raises(CimlError, match="training/ids differ"):
        store.verify(path, counts, changed)
    with pytest.raises(CimlError, match="ids written"):
        store.verify(path, counts, dict(ids, training=ids["training"][:-1]))


def test_a_run_table_take_keeps_the_code_lists():
    table = runs.scan(fake_history(n=6), "tempest-full", "status")
    part = table.take(table.passed)
    assert part.labels is table.labels and part.sources is table.sources
    assert dataclasses.replace(part).run_ids() == [i for i, ok in zip(table.run_ids(),
                                                                        table.passed) if ok]
