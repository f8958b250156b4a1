"""Atomic file writes and safe file names: nothing half-written ever reads as data."""

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


def fsync_dir(path):
    """Make a rename in ``path`` durable (best effort where unsupported)."""
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
    it was, so readers see either the old file or the whole new one.
    """
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
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def replace_dir(tmp_dir, final_dir):
    """Move a completed folder into place, replacing an older one last.

    The old folder is renamed aside first and removed only once the new one
    is in place, so an interruption leaves either the old or the new
    folder under the final name (plus a leftover ``.old`` to clean).
    """
    final_dir = pathlib.Path(final_dir)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dir(path):
    """Remove a folder so that no reader ever sees it half removed.

    It is renamed aside first (``.<name>.old-<pid>``, which readers skip and
    the cleanup of a dead writer's leftovers removes), then deleted: an
    interruption leaves either the whole folder or none under its name.
    """
    path = pathlib.Path(path)
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    if aside.exists():
        shutil.rmtree(aside, ignore_errors=True)
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
