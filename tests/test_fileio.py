"""asrkit.fileio: atomic writes and stage markers."""

from __future__ import annotations

import os
import stat

import pytest

from asrkit.fileio import atomic_write, is_done, mark_done


def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "sub" / "text"
    with atomic_write(path) as f:
        f.write("a 1\n")
    assert path.read_text() == "a 1\n"
    with pytest.raises(RuntimeError), atomic_write(path) as f:
        f.write("half a fi")
        raise RuntimeError("killed")
    assert path.read_text() == "a 1\n"  # the old file survives
    assert sorted(p.name for p in path.parent.iterdir()) == ["text"]  # no temp file left


def test_atomic_write_gives_open_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "x.bin", "wb") as f:
            f.write(b"\0")
        os.umask(0o027)
        with atomic_write(tmp_path / "y") as f:
            f.write("y\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "y").stat().st_mode) == 0o640


def test_done_marker(tmp_path):
    assert not is_done(tmp_path)
    mark_done(tmp_path)
    assert is_done(tmp_path) and (tmp_path / ".done").read_text() == "ok\n"
