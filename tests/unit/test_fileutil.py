"""Removing a folder: never half removed under its own name."""

import os

from ciml import fileutil


def test_remove_dir_moves_aside_then_deletes(tmp_path, monkeypatch):
    target = tmp_path / "ds"
    (target / "arrays").mkdir(parents=True)
    (target / "arrays" / "0.0").write_bytes(b"x" * 100)
    (target / "meta.json").write_text("{}")
    seen = []
    rmtree = fileutil.shutil.rmtree

    def watching_rmtree(path, *args, **kwargs):
        # By the time anything is deleted, the name is already free.
        seen.append((path.name, target.exists()))
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(fileutil.shutil, "rmtree", watching_rmtree)
    assert fileutil.remove_dir(target) == target
    assert not target.exists() and list(tmp_path.iterdir()) == []
    [(aside, existed)] = seen
    assert not existed
    assert fileutil.parse_work_name(aside)[:2] == ("old", os.getpid())
    assert fileutil.parse_work_name(aside).name == "ds"


def test_work_names_parse_back_one_way_only(tmp_path):
    """12.1: the folders of ``tf`` and ``tf-11`` never read as each other's."""
    for name in ("tf", "tf-11", "tf-11-2", "a.old-3", ""):
        for kind in ("tmp", "old"):
            work = fileutil.parse_work_name(fileutil.work_name(kind, name))
            assert (work.kind, work.pid, work.name) == (kind, os.getpid(), name)
    for other in ("tf-11", ".tmp-tf-11-123-abc", ".tf.old-11", ".tmp@x@y@tf", ".new@1@a@tf",
                  ".tmp@1@a@tf@b"):
        assert fileutil.parse_work_name(other) is None


def test_remove_leftovers_takes_only_the_named_dead_owners_folders(tmp_path):
    dead_tf = tmp_path / ".tmp@999999999@aa@tf"
    dead_tf11 = tmp_path / ".tmp@999999999@bb@tf-11"
    live_tf = tmp_path / fileutil.work_name("tmp", "tf")
    dataset = tmp_path / "tf"
    for folder in (dead_tf, dead_tf11, live_tf, dataset):
        (folder / "sub").mkdir(parents=True)
    assert fileutil.remove_leftovers(tmp_path, "tf") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [dead_tf11.name, live_tf.name, "tf"])
    assert fileutil.remove_leftovers(tmp_path) == 1
    assert not dead_tf11.exists()


class _SyncSpy:
    """Records which paths were fsynced before the first folder rename."""

    def __init__(self, monkeypatch):
        self.synced = set()
        self.at_rename = None
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.synced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
            return real_fsync(fd)

        def replace(src, dst):
            if self.at_rename is None and os.path.isdir(src):
                self.at_rename = (set(self.synced), self._tree(src))
            return real_replace(src, dst)

        monkeypatch.setattr(fileutil.os, "fsync", fsync)
        monkeypatch.setattr(fileutil.os, "replace", replace)

    @staticmethod
    def _tree(top):
        out = {os.path.realpath(top)}
        for root, dirs, files in os.walk(top):
            out.update(os.path.realpath(os.path.join(root, n)) for n in dirs + files)
        return out

    def unsynced_at_rename(self, src):
        synced, tree = self.at_rename
        # Paths were recorded under the temporary name.
        return sorted(p for p in tree if p not in synced)


def test_replace_dir_syncs_every_file_and_folder_before_the_rename(tmp_path, monkeypatch):
    """12.6: a folder renamed into place has every byte on disk first."""
    import sys

    if not sys.platform.startswith("linux"):
        import pytest

        pytest.skip("reads fsynced paths from /proc/self/fd")
    tmp = tmp_path / "work"
    (tmp / "a" / "b").mkdir(parents=True)
    (tmp / "a" / "b" / "chunk").write_bytes(b"x" * 10)
    (tmp / "model.keras").write_bytes(b"y")
    spy = _SyncSpy(monkeypatch)
    fileutil.replace_dir(tmp, tmp_path / "final")
    assert spy.unsynced_at_rename(tmp) == []
    assert (tmp_path / "final" / "a" / "b" / "chunk").read_bytes() == b"x" * 10
