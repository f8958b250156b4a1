"""Atomic file writes and safe file names: nothing half-written ever reads as data."""

import collections
import contextlib
import json
import os
import pathlib
import re
import shutil
import tempfile

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_filename(value, max_len=100):
    """Turn an identifier from a remote source into one safe path component.

    Run ids and build uuids come from databases and APIs we do not control;
    anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, a
    leading dot is escaped (no ``..`` or hidden files) and overlong values
    are cut and suffixed with a hash so that distinct ids stay distinct.
    """
    import hashlib

    text = str(value)
    safe = _UNSAFE.sub("_", text)
    if safe.startswith("."):
        safe = "_" + safe
    if not safe:
        safe = "_"
    if safe != text or len(safe) > max_len:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe[:max_len - 13]}-{digest}"
    return safe


def _remote(path):
    from ciml.storage import RemotePath

    return isinstance(path, RemotePath)


def fsync_dir(path):
    """Make a rename in ``path`` durable (best effort where unsupported)."""
    if _remote(path):
        return  # an object store has nothing to sync
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside ``path``; rename it into place on success.

    On any exception the temporary file is removed and ``path`` is left as
    it was, so readers see either the old file or the whole new one.  On an
    object store (:class:`ciml.storage.RemotePath`) the content is kept in
    memory and written with one PUT, which is atomic there.
    """
    if _remote(path):
        import io

        buf = io.BytesIO() if "b" in mode else io.StringIO()
        yield buf
        data = buf.getvalue()
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path, obj):
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_open(path, "w") as fh:
        fh.write(text)


def read_json(path):
    if _remote(path):
        return json.loads(path.read_bytes())
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# -- folders being written or removed ------------------------------------------
#
# A folder is written under a hidden work name and renamed into place, and a
# folder being replaced or removed is renamed aside first.  Work names carry
# the owner's process id so that the leftovers of a dead process can be
# removed, and the name of the folder they stand for.  Their fields are
# separated by ``@``, which neither a name (:func:`ciml.paths.check_name`) nor
# a run folder (:func:`safe_filename`) may contain, so a work name parses
# back one way only: building ``tf`` can never mistake ``tf-11``'s folder
# for its own, nor read ``11`` as a process id.

_WORK_SEP = "@"
_WORK_KINDS = ("tmp", "old")


class WorkName(collections.namedtuple("WorkName", "kind pid token name")):
    """A parsed work name: ``kind`` (``tmp`` or ``old``), owner ``pid``, ``name``."""


def work_name(kind, name=""):
    """``.<kind>@<pid>@<token>@<name>``: a hidden, unique name owned by this process."""
    import uuid

    if kind not in _WORK_KINDS:
        raise ValueError(f"bad work folder kind {kind!r}")
    if _WORK_SEP in name:
        raise ValueError(f"{name!r} cannot have a work folder: it contains {_WORK_SEP!r}")
    return _WORK_SEP.join((f".{kind}", str(os.getpid()), uuid.uuid4().hex[:12], name))


def parse_work_name(entry_name):
    """The :class:`WorkName` of a work folder's name, or ``None`` for any other name."""
    parts = entry_name.split(_WORK_SEP)
    if len(parts) != 4 or parts[0][1:] not in _WORK_KINDS or not parts[0].startswith("."):
        return None
    kind, pid, token, name = parts[0][1:], parts[1], parts[2], parts[3]
    if not pid.isdigit() or not token:
        return None
    return WorkName(kind, int(pid), token, name)


def remove_leftovers(folder, name=None):
    """Remove the work folders in ``folder`` (of ``name`` only, if given) whose process is gone.

    :return: how many were removed.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.iterdir():
        work = parse_work_name(entry.name)
        if work is None or (name is not None and work.name != name):
            continue
        if work.pid != os.getpid() and not pid_alive(work.pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed


def fsync_tree(path):
    """fsync every file and folder under ``path``, deepest first.

    A folder renamed into place must not be "complete" with files that a
    power loss leaves empty: everything in it reaches the disk first.
    """
    path = pathlib.Path(path)
    for root, _dirs, files in os.walk(path, topdown=False):
        for filename in files:
            try:
                fd = os.open(os.path.join(root, filename), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def replace_dir(tmp_dir, final_dir, sync=True):
    """Move a completed folder into place, replacing an older one last.

    Everything in ``tmp_dir`` is fsynced first (``sync=False`` when the
    caller already did).  The old folder is renamed aside first and removed
    only once the new one is in place, so an interruption leaves either the
    old or the new folder under the final name (plus a leftover to clean).
    """
    final_dir = pathlib.Path(final_dir)
    if sync:
        fsync_tree(tmp_dir)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(work_name("old", final_dir.name))
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dir(path):
    """Remove a folder so that no reader ever sees it half removed.

    It is renamed aside first (a hidden work name, which readers skip and
    the cleanup of a dead writer's leftovers removes), then deleted: an
    interruption leaves either the whole folder or none under its name.
    """
    path = pathlib.Path(path)
    aside = path.with_name(work_name("old", path.name))
    os.replace(path, aside)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)
    return path


def pid_alive(pid):
    """Whether a process exists (a leftover of a dead writer may be removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    except OSError:
        return False
    return True
