"""lrc.files: every write is all or nothing, in the target's own folder, durable; a full disk is an exit-2 error
that leaves the previous file intact and no partial file anywhere."""

import errno
import os

import pytest

from lrc.files import DiskFullError, atomic_writer, remove_stale_temporaries, write_json, write_text


def test_a_write_lands_whole_through_a_temporary_file_in_the_same_folder(tmp_path, monkeypatch):
    moves = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moves.append((str(src), str(dst))), replace(src, dst))[1])
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd))[1])
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    (src, dst), = moves
    assert os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path)  # a rename, never a copy across filesystems
    assert os.path.basename(src).startswith(".metrics.json.tmp-")
    assert len(synced) >= 2  # the file, then its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_keeps_the_previous_file_and_leaves_no_partial_one(tmp_path, monkeypatch, where):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    if where == "fsync":  # NFS and delayed allocation report ENOSPC at fsync
        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError) as err:
        with atomic_writer(target) as fh:
            fh.write(b"half of a new one")
            if where == "write":
                raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    message = str(err.value)
    assert f"no space left on the device while writing {target}" in message and "MiB free there" in message
    assert "the previous last.ckpt (if any) is intact" in message
    assert isinstance(err.value, OSError) and err.value.exit_code == 2


def test_any_other_failure_also_leaves_nothing_behind(tmp_path):
    target = tmp_path / "config.yaml"
    with pytest.raises(RuntimeError):
        with atomic_writer(target, "w") as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_text(target, "whole\n")
    assert target.read_text() == "whole\n"


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".step-00000004.ckpt.tmp-{dead_pid}-0").write_bytes(b"partial")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".last.ckpt.tmp-{alive.pid}-3").write_bytes(b"being written")
        (tmp_path / "step-00000002.ckpt").write_bytes(b"a checkpoint")
        removed = remove_stale_temporaries(tmp_path)
    finally:
        alive.kill()
        alive.wait()
    assert [p.name for p in removed] == [f".step-00000004.ckpt.tmp-{dead_pid}-0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".last.ckpt.tmp-{alive.pid}-3", "step-00000002.ckpt"]
