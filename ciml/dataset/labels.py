"""Class labels: which class a run belongs to, for each ``--class-label``."""

from ciml.records import FAILED, PASSED

#: ``--class-label status`` class names, in code order: 0 passed, 1 failed.
STATUS_CLASSES = (PASSED, FAILED)

_PASSED_RESULTS = {"0", "passed", "pass", "success", "succeeded", "ok"}


def provider_family(provider):
    """A node provider's family: its name up to the first ``-`` (rax-dfw -> rax)."""
    if provider is None:
        return None
    return str(provider).split("-", 1)[0]


def _status(run):
    status = str(run.status or run.result or "").strip().lower()
    if not status:
        return None
    if status in (PASSED, FAILED):
        return status
    # A source that did not normalize its result string: the original
    # counted 0 and 'Success' as passed and everything else as failed.
    return PASSED if status in _PASSED_RESULTS else FAILED


def run_label(run, class_label="status"):
    """The class name of ``run`` for ``class_label``; ``None`` if it has none.

    ``status``: ``passed``/``failed``; ``node_provider``: the provider family
    (``rax``, ``ovh``, ``vexxhost``, ``inap``, ``limestone``, ...);
    ``node_provider_all``: the raw provider (``rax-dfw``); any other name: that
    run-metadata key (or a :class:`~ciml.records.RunRecord` field such as
    ``result``), as a string.
    """
    if class_label == "status":
        return _status(run)
    meta = run.metadata or {}
    if class_label in ("node_provider", "node_provider_all"):
        provider = meta.get("node_provider")
        if provider in (None, ""):
            return None
        return provider_family(provider) if class_label == "node_provider" else str(provider)
    value = meta.get(class_label)
    if value is None and class_label in ("result", "build_name", "source"):
        value = getattr(run, class_label)
    if value is None or value == "":
        return None
    return str(value)


def class_names(class_label, labels):
    """The dataset's class names, in code order, for the labels seen."""
    if class_label == "status":
        return list(STATUS_CLASSES)
    return sorted({label for label in labels if label is not None})
