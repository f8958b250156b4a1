"""The storage layer: the data path on a local disk or on any fsspec file system.

A data path is a local folder (``/srv/ciml``) or an fsspec URL
(``s3://bucket/prefix``; ``s3`` through s3fs, other protocols where their
fsspec package is installed).  Everything below the data path is reached
through one of two path types with the same small, pathlib-like surface:

* :class:`pathlib.Path` for a local folder: unchanged behaviour, atomic
  renames, ``fsync``.
* :class:`RemotePath` for a URL: ``/``, ``name``, ``parent``,
  ``exists()``, ``is_dir()``, ``is_file()``, ``iterdir()``, ``glob()``,
  ``open()``, ``read_bytes()``, ``write_bytes()``, ``unlink()`` over the
  fsspec file system.  It deliberately has no ``__fspath__``: a remote path
  handed to :func:`open` or :mod:`os` fails loudly instead of writing a
  local file named ``s3:``.

The functions here are the few operations whose meaning differs between the
two (:func:`write_bytes` atomically, :func:`publish_dir`, :func:`remove_dir`,
:func:`remove_abandoned`, :func:`zarr_store`, :func:`local_copy`); the rest of
ciml calls them, or :mod:`ciml.fileutil` which delegates to them, and never
asks which kind of store it has.

**Atomicity without rename.**  An object store writes each object whole
(a reader sees the old object or the new one), but it cannot rename a
folder.  So a folder of many files (a dataset, a model) becomes visible
through a *completion marker*: one file that is written last and that
readers require (a dataset's root ``zarr.json`` with ``complete``, a model's
``metadata.json``).  A writer fills a hidden work folder of its own
(``.tmp@pid@token@name``, :func:`ciml.fileutil.work_name`), then
:func:`publish_dir` removes the old folder's marker (it stops being visible),
removes its files, copies the work folder in server-side with the marker
last, and removes the work folder.  Work folders of other writers are
never touched while they may be alive: :func:`remove_abandoned` removes one
only when its owner is a dead process on this host, or when nothing in it
changed for :data:`ABANDONED_AFTER_S` (a writer on another machine).
"""

import atexit
import contextlib
import datetime as dt
import fnmatch
import json
import os
import pathlib
import posixpath
import shutil
import socket
import tempfile
import time

from ciml.errors import ConfigError

#: A work folder on a shared store in which nothing changed for this long is
#: abandoned (its writer, on some machine, died): cleanup may remove it.
ABANDONED_AFTER_S = 6 * 3600.0

#: The owner file of a remote work folder: which host and process write it.
OWNER_FILE = ".owner.json"

# Options that hold secrets: never shown, never logged.
_SECRET_KEYS = ("secret", "key", "token", "password", "credential", "session")


def is_url(text):
    """Whether ``text`` names an fsspec URL (``proto://…``) rather than a local path."""
    return isinstance(text, str) and "://" in text and not text.startswith("file://")


def redact_url(url):
    """``url`` fit to show: no ``user:password@``, no secret query values."""
    from ciml.http import redact_url as redact

    return redact(str(url))


def _is_secret(key):
    return key != "endpoint_url" and any(word in key.lower() for word in _SECRET_KEYS)


def redact_options(options):
    """Storage options fit to show: the values of secret-looking keys masked."""
    out = {}
    for key, value in (options or {}).items():
        if isinstance(value, dict):
            out[key] = redact_options(value)
        else:
            out[key] = "***" if _is_secret(key) else value
    return out


def secret_values(options):
    """The values of the secret-looking keys of storage options, nested ones too."""
    for key, value in (options or {}).items():
        if isinstance(value, dict):
            yield from secret_values(value)
        elif isinstance(value, str) and _is_secret(key):
            yield value


def parse_storage_options(items):
    """``--storage-option key=value`` strings as fsspec keyword arguments.

    A value that reads as JSON (``true``, ``3``, ``{"a": 1}``) is that
    value, anything else a string; ``a.b=value`` sets ``{"a": {"b": value}}``
    (``client_kwargs.region_name=eu-west-1``).
    """
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--storage-option expects key=value, got {key or item!r}"
                              if not sep and "=" not in str(item) and len(str(item)) < 40
                              else "--storage-option expects key=value")
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        node = out
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--storage-option {key}: {parent} is set twice")
        node[leaf] = parsed
    return out


def _filesystem(url, options):
    """``(fs, path)`` of an fsspec URL; a clear error when its package is missing."""
    import fsspec

    options = dict(options or {})
    protocol = url.split("://", 1)[0]
    if protocol in ("s3", "s3a"):
        # Other processes write to a shared store: a cached listing would
        # hide their runs, datasets and models.
        options.setdefault("use_listings_cache", False)
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise ConfigError(f"data path {redact_url(url)}: the {protocol!r} protocol needs a "
                          f"package that is not installed ({exc}); for s3 "
                          "pip install 'ciml[s3]'") from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise ConfigError(f"data path {redact_url(url)}: unknown protocol "
                              f"{protocol!r}") from None
        raise ConfigError(f"data path {redact_url(url)}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"data path {redact_url(url)}: a --storage-option is not "
                          f"understood by {protocol}: {exc}") from None


def location(root, options=None):
    """The root of a data path: a :class:`pathlib.Path` or a :class:`RemotePath`."""
    if isinstance(root, (pathlib.Path, RemotePath)):
        return root
    text = os.fspath(root)
    if text.startswith("file://"):
        return pathlib.Path(text[len("file://"):]).expanduser()
    if not is_url(text):
        return pathlib.Path(text).expanduser()
    fs, path = _filesystem(text, options)
    protocol = text.split("://", 1)[0]
    return RemotePath(fs, path.rstrip("/"), protocol)


def is_remote(path):
    return isinstance(path, RemotePath)


class RemotePath:
    """A path on an fsspec file system, with the part of pathlib's API ciml uses."""

    __slots__ = ("fs", "path", "protocol")

    def __init__(self, fs, path, protocol):
        self.fs = fs
        self.path = path
        self.protocol = protocol

    # -- naming ------------------------------------------------------------------

    def __truediv__(self, part):
        part = str(part)
        if part.startswith("/") or ".." in part.split("/"):
            raise ValueError(f"{part!r} would leave {self}")
        return RemotePath(self.fs, posixpath.join(self.path, part), self.protocol)

    def __str__(self):
        return f"{self.protocol}://{self.path}"

    def __repr__(self):
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other):
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))

    def __lt__(self, other):
        return str(self) < str(other)

    @property
    def name(self):
        return posixpath.basename(self.path)

    @property
    def stem(self):
        name = self.name
        return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name

    @property
    def suffix(self):
        name = self.name
        return "." + name.rsplit(".", 1)[1] if "." in name.lstrip(".") else ""

    @property
    def parent(self):
        return RemotePath(self.fs, posixpath.dirname(self.path), self.protocol)

    @property
    def parents(self):
        out, path = [], self.parent
        while path.path and path.path not in ("/", "."):
            out.append(path)
            if posixpath.dirname(path.path) == path.path:
                break
            path = path.parent
        return out

    def with_name(self, name):
        return self.parent / name

    def relative_to(self, other):
        prefix = other.path.rstrip("/") + "/"
        if not self.path.startswith(prefix):
            raise ValueError(f"{self} is not under {other}")
        return pathlib.PurePosixPath(self.path[len(prefix):])

    # -- queries -----------------------------------------------------------------

    def exists(self):
        return self.fs.exists(self.path)

    def is_dir(self):
        return self.fs.isdir(self.path)

    def is_file(self):
        return self.fs.isfile(self.path)

    def iterdir(self):
        try:
            entries = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return iter(())
        own = self.path.rstrip("/")
        return iter(sorted(RemotePath(self.fs, e.rstrip("/"), self.protocol)
                           for e in entries if e.rstrip("/") != own))

    def glob(self, pattern):
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def rglob(self, pattern):
        try:
            found = self.fs.find(self.path)
        except FileNotFoundError:
            return iter(())
        return iter(sorted(RemotePath(self.fs, p, self.protocol) for p in found
                           if fnmatch.fnmatchcase(posixpath.basename(p), pattern)))

    def stat(self):
        """``st_size`` and ``st_mtime`` of an object, like :meth:`pathlib.Path.stat`."""
        import types

        info = self.fs.info(self.path)
        return types.SimpleNamespace(st_size=int(info.get("size") or 0),
                                     st_mtime=_mtime(info))

    def stat_mtime(self):
        """The modification time of an object as a UNIX time (``None`` if unknown)."""
        return _mtime(self.fs.info(self.path))

    # -- reading and writing -----------------------------------------------------

    def mkdir(self, parents=False, exist_ok=False):
        # Object stores have no folders: a prefix exists once an object does.
        return None

    def open(self, mode="rb", encoding=None, newline=None):
        if "b" in mode:
            return self.fs.open(self.path, mode)
        return self.fs.open(self.path, mode, encoding=encoding or "utf-8", newline=newline)

    def read_bytes(self):
        return self.fs.cat_file(self.path)

    def read_text(self, encoding="utf-8"):
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data):
        # One PUT: readers see the old object or the whole new one.
        self.fs.pipe_file(self.path, bytes(data))
        return len(data)

    def write_text(self, text, encoding="utf-8"):
        return self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok=False):
        # S3 deletes a missing key without a word: ask first when it matters.
        if not missing_ok and not self.fs.isfile(self.path):
            raise FileNotFoundError(str(self))
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self):
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)
        # Some S3 servers (SeaweedFS) keep an emptied folder as a prefix that
        # listings show: remove those too, deepest first.  Elsewhere this is
        # one listing and one delete of a key that does not exist.
        left, todo = [], [self.path]
        while todo and len(left) < 10000:
            folder = todo.pop()
            try:
                entries = self.fs.ls(folder, detail=True, refresh=True)
            except (FileNotFoundError, OSError):
                continue
            for entry in entries:
                name = entry["name"].rstrip("/")
                if entry.get("type") == "directory" and name != folder.rstrip("/"):
                    left.append(name)
                    todo.append(name)
        for folder in sorted(left, key=len, reverse=True) + [self.path]:
            with contextlib.suppress(OSError, ValueError):
                self.fs.rm_file(folder.rstrip("/") + "/")
        self.fs.invalidate_cache(self.path)

    def files(self):
        """Every object under this prefix, as paths relative to it."""
        try:
            found = self.fs.find(self.path)
        except FileNotFoundError:
            return []
        prefix = self.path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in found if p.startswith(prefix))


def _mtime(info):
    for key in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return None


# -- operations whose meaning differs between a disk and an object store ---------


def write_bytes(path, data):
    """Write a whole file atomically: readers see the old one or the whole new one."""
    if is_remote(path):
        path.write_bytes(data)
        return
    from ciml import fileutil

    fileutil.atomic_write_bytes(path, data)


def rmtree(path):
    """Remove a folder and everything in it; nothing if it does not exist."""
    if is_remote(path):
        path.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def make_work_dir(folder, name=""):
    """A fresh hidden work folder of this process in ``folder`` (see module docs)."""
    from ciml import fileutil

    work = folder / fileutil.work_name("tmp", name)
    if is_remote(work):
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        (work / OWNER_FILE).write_bytes(json.dumps(owner).encode())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        work.mkdir()
    return work


def publish_dir(work, final, marker):
    """Make the folder at ``work`` the one at ``final``; ``marker`` appears last.

    ``work`` may be a local folder and ``final`` remote (a model trained
    into a local folder): its files are uploaded into a work folder beside
    ``final`` first.  Local to local is :func:`ciml.fileutil.replace_dir`
    (a rename; the marker is already inside).
    """
    from ciml import fileutil

    if not is_remote(final):
        fileutil.replace_dir(work, final)
        return final
    if not is_remote(work):
        staged = make_work_dir(final.parent, final.name)
        try:
            for local in sorted(pathlib.Path(work).rglob("*")):
                if local.is_file():
                    rel = local.relative_to(work).as_posix()
                    (staged / rel).write_bytes(local.read_bytes())
            publish_dir(staged, final, marker)
        except BaseException:
            staged.rmtree()
            raise
        shutil.rmtree(work, ignore_errors=True)
        return final
    files = [f for f in work.files() if f != OWNER_FILE]
    if marker not in files:
        raise FileNotFoundError(f"{work} has no completion marker {marker}: not published")
    remove_dir(final, marker)
    fs = final.fs
    for rel in files:
        if rel != marker:
            fs.copy((work / rel).path, (final / rel).path)
    fs.copy((work / marker).path, (final / marker).path)
    work.rmtree()
    return final


def remove_dir(path, marker):
    """Remove a published folder: its marker first, so no reader sees it half removed."""
    from ciml import fileutil

    if not is_remote(path):
        if path.exists():
            fileutil.remove_dir(path)
        return path
    (path / marker).unlink(missing_ok=True)
    path.rmtree()
    return path


def remove_abandoned(folder, name=None, *, grace_s=None):
    """Remove work folders in ``folder`` (of ``name`` only) whose writer is gone.

    Locally, a writer is gone when its process is.  On a shared store a
    folder is abandoned when its owner is a dead process on this host, or
    when nothing in it changed for ``grace_s`` (default
    :data:`ABANDONED_AFTER_S`): a writer on another machine may be alive,
    and its folder is then left alone.
    :return: how many were removed.
    """
    from ciml import fileutil

    if not is_remote(folder):
        return fileutil.remove_leftovers(folder, name)
    grace_s = ABANDONED_AFTER_S if grace_s is None else grace_s
    removed = 0
    now = time.time()
    for entry in folder.iterdir():
        work = fileutil.parse_work_name(entry.name)
        if work is None or (name is not None and work.name != name):
            continue
        if not _abandoned(entry, work, now, grace_s):
            continue
        entry.rmtree()
        removed += 1
    return removed


def _abandoned(entry, work, now, grace_s):
    from ciml import fileutil

    try:
        owner = json.loads((entry / OWNER_FILE).read_bytes())
    except (OSError, ValueError):
        owner = {}
    if owner.get("host") == socket.gethostname() and owner.get("pid") == work.pid:
        if work.pid == os.getpid():
            return False
        if not fileutil.pid_alive(work.pid):
            return True
    newest = 0.0
    for rel in entry.files():
        with contextlib.suppress(OSError, ValueError):
            newest = max(newest, (entry / rel).stat_mtime() or 0.0)
    return newest > 0 and now - newest > grace_s


def zarr_store(path, read_only=False):
    """What zarr opens for a group at ``path``: a local folder, or an FsspecStore."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), storage_options=dict(path.fs.storage_options),
                                read_only=read_only)


_LOCAL_COPIES = []


def local_copy(path):
    """A local folder with the files under ``path`` (itself, when it is local).

    Libraries that read a folder from disk by name (Keras, LightGBM) load a
    model through this; the copy lives until the process exits.
    """
    if not is_remote(path):
        return pathlib.Path(path)
    target = pathlib.Path(tempfile.mkdtemp(prefix="ciml-model-"))
    if not _LOCAL_COPIES:
        atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _LOCAL_COPIES])
    _LOCAL_COPIES.append(target)
    for rel in path.files():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((path / rel).read_bytes())
    return target


def scratch_file(folder, name):
    """A path for a writer's scratch file (deleted by it): in ``folder``, or local."""
    if not is_remote(folder):
        return pathlib.Path(folder) / name
    fd, path = tempfile.mkstemp(prefix="ciml-", suffix="-" + name)
    os.close(fd)
    return pathlib.Path(path)


def local_output(path, option="--output-dir"):
    """``path`` where a local folder is needed (plots): refused on an object store."""
    if is_remote(path):
        raise ConfigError(f"plots are written to a local folder: give {option} with a "
                          f"data path on object storage ({redact_url(path)})")
    return path
