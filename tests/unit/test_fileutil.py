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
    assert seen == [(f".ds.old-{os.getpid()}", False)]


def test_remove_dir_clears_an_earlier_leftover(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()
    leftover = tmp_path / f".ds.old-{os.getpid()}"
    (leftover / "sub").mkdir(parents=True)
    fileutil.remove_dir(target)
    assert list(tmp_path.iterdir()) == []
