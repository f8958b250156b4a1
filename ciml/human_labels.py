"""Labels people correct: stored in the raw cache's index, preferred over the source's.

A CI operator knows things the result source does not: this run failed
because the node ran out of memory (``cause=oom``), that one failed for a
reason unrelated to the change (``status=passed``).  ``ciml run label``
records such a label, with who gave it and when, in a ``human_labels``
table of the raw cache's catalog (:mod:`ciml.catalog`; ``raw/index.sqlite``
in a local data path), beside the runs it describes; the fetched data and
the run records are never edited.

``build-dataset`` reads the run records through :func:`apply`: a human
label overrides the run's field of the same name (``status``, ``result``)
or its metadata key, and the dataset records how many of its class labels
came from a person.  One label per run and key: labelling again replaces
it (the table keeps who and when of the latest).
"""

import csv
import dataclasses
import datetime as dt
import getpass
import os
import re

from ciml.errors import CimlError, ConfigError, NotFoundError

#: Run-record fields a label may override; any other key is run metadata.
FIELDS = ("status", "result")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_STATUS = ("passed", "failed")


def who_am_i():
    """Who is labelling: ``CIML_USER``, else the login name."""
    name = os.environ.get("CIML_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def parse_assignments(items):
    """``["cause=oom", "status=passed"]`` -> ``{"cause": "oom", "status": "passed"}``."""
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(f"a label is key=value, e.g. cause=oom; got {item!r}")
        check_label(key, value)
        out[key] = value
    if not out:
        raise ConfigError("give at least one label, e.g. cause=oom")
    return out


def check_label(key, value):
    if not _KEY.match(key):
        raise ConfigError(f"bad label key {key!r}: letters, digits, _ . - (at most 64)")
    if key == "status" and value not in _STATUS:
        raise ConfigError(f"status is passed or failed, not {value!r}")
    if value == "":
        raise ConfigError(f"label {key!r} has an empty value")


def set_labels(cache, run_id, labels, who=None, when=None):
    """Store ``labels`` for a cached run; returns the stored rows."""
    from ciml.cache import CACHED

    if cache.state(run_id) != CACHED:
        raise NotFoundError(f"run {run_id!r} is not in the raw cache; only cached runs "
                            "can be labelled")
    who = who or who_am_i()
    when = when or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for key, value in labels.items():
        check_label(key, str(value))
        rows.append((run_id, key, str(value), who, when))
    cache.catalog.put_labels(rows)
    return [dict(zip(("run_id", "key", "value", "who", "time"), r)) for r in rows]


def labels_of(cache, run_ids=None):
    """``{run_id: {key: {"value", "who", "time"}}}`` of the human labels (all, or these runs)."""
    catalog = getattr(cache, "catalog", None)
    if catalog is None:
        return {}
    if not cache.exists():
        return {}  # a local cache with no index yet: nothing to read, nothing to create
    out = {}
    for run_id, key, value, who, time in catalog.labels():
        if run_ids is not None and run_id not in run_ids:
            continue
        out.setdefault(run_id, {})[key] = {"value": value, "who": who, "time": time}
    return out


def apply(cache, runs):
    """``(runs with human labels applied, {run_id: set of keys a person set})``."""
    labels = labels_of(cache, {r.id for r in runs})
    if not labels:
        return list(runs), {}
    out = [relabelled(run, {k: v["value"] for k, v in labels[run.id].items()})
           if labels.get(run.id) else run for run in runs]
    return out, {run_id: set(keys) for run_id, keys in labels.items()}


def relabelled(run, labels):
    """``run`` with what a person said of it (``{key: value}``): ``status`` and
    ``result`` replace the record's fields, other keys go to its metadata."""
    fields = {k: v for k, v in labels.items() if k in FIELDS}
    metadata = dict(run.metadata or {})
    metadata.update({k: v for k, v in labels.items() if k not in FIELDS})
    return dataclasses.replace(run, metadata=metadata, **fields)


def human_count(class_label, labelled_ids, human):
    """How many of the runs in a dataset got their class label from a person."""
    key = {"node_provider": "node_provider", "node_provider_all": "node_provider"}.get(
        class_label, class_label)
    return sum(1 for run_id in labelled_ids if key in human.get(run_id, ()))


def import_csv(cache, path, who=None):
    """Labels from a CSV file with a ``run_id`` column and one column per key.

    Empty cells are skipped.  Every row is checked before anything is
    stored: a bad file changes nothing.  Returns the number of labels stored.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CimlError(f"cannot read labels from {path}: {exc}") from None
    if "run_id" not in header:
        raise ConfigError(f"{path} has no run_id column (its header: "
                          f"{', '.join(header[:6]) or 'none'}); expected run_id,KEY,...")
    keys = [h for h in header if h and h != "run_id"]
    if not keys:
        raise ConfigError(f"{path} has no label column beside run_id")
    from ciml.cache import CACHED

    planned = []
    for line, row in enumerate(rows, start=2):
        run_id = (row.get("run_id") or "").strip()
        if not run_id:
            raise ConfigError(f"{path}:{line}: empty run_id")
        labels = {k: (row.get(k) or "").strip() for k in keys if (row.get(k) or "").strip()}
        for key, value in labels.items():
            try:
                check_label(key, value)
            except ConfigError as exc:
                raise ConfigError(f"{path}:{line}: {exc}") from None
        if cache.state(run_id) != CACHED:
            raise NotFoundError(f"{path}:{line}: run {run_id!r} is not in the raw cache")
        if labels:
            planned.append((run_id, labels))
    count = 0
    who = who or who_am_i()
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows_sql = [(run_id, k, v, who, when) for run_id, labels in planned
                for k, v in labels.items()]
    cache.catalog.put_labels(rows_sql)
    count = len(rows_sql)
    return count
