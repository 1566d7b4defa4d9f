"""bundle.atomic: a write either lands whole or leaves the previous file and no temporary behind; a write that
fails (full disk, no permission, removed folder) ends in one message naming the file, the cause and what was kept."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bundle.atomic import (
    WriteError,
    atomic_save,
    atomic_write,
    atomic_write_json,
    write_cause,
    write_error_in,
    write_failed,
)
from bundle.checkpoints import load_weights
from bundle.errors import DebugUserError, RelayedUserError, UserError, set_debug
from tests.helpers import make_full, remount, small_disk


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_json({"epoch": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"epoch": 2')  # torn content, then a crash
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_atomic_save_round_trips_with_weights_only(tmp_path):
    state = {"w": torch.arange(3.0)}
    atomic_save(state, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], state["w"])


# ---- a failed write is one message: the file, the cause in words, what was kept, what to do -------------------


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """``write_failed`` raises ``WriteError`` (not the debug variant) whatever the environment says."""
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


@pytest.mark.parametrize(
    "number, cause, todo",
    [
        (errno.ENOSPC, "the disk is full", "free some space"),
        (errno.EDQUOT, "the disk is full (the disk quota is used up)", "raise the quota"),
        (errno.EACCES, "no permission to write there", "writable"),
        (errno.EPERM, "no permission to write there", "writable"),
        (errno.EROFS, "no permission to write there (the disk is read-only)", "writable"),
        (errno.ENOENT, "its folder was removed", "keep {folder} in place"),
    ],
)
def test_write_cause_names_each_error_in_words(number, cause, todo):
    assert write_cause(number)[0] == cause
    assert todo in write_cause(OSError(number, os.strerror(number)))[1]


def test_write_cause_finds_the_error_behind_torch_saves_runtime_error():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904
    except RuntimeError as e:
        assert write_error_in(e).errno == errno.ENOSPC
        assert write_cause(e)[0] == "the disk is full"
    assert write_cause(errno.EIO)[0] == f"the system refused the write ({os.strerror(errno.EIO)})"
    assert write_error_in(ValueError("no file")) is None


def test_write_error_survives_a_process_boundary(tmp_path):
    with pytest.raises(WriteError) as e:
        write_failed(tmp_path / "m.pt", errno.ENOSPC, "the model", "nothing was written")
    copy = pickle.loads(pickle.dumps(e.value))  # how a ProcessPoolExecutor hands it back
    assert isinstance(copy, UserError) and str(copy) == str(e.value)
    assert (copy.path, copy.errno) == (str(tmp_path / "m.pt"), errno.ENOSPC)
    assert str(e.value) == (
        f"cannot write the model {tmp_path / 'm.pt'}: the disk is full; nothing was written. "
        f"Free some space on the disk of {tmp_path}, then rerun"
    )


def test_relayed_user_error_keeps_only_its_message():
    text = (
        "Caught RelayedUserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nbundle.errors.RelayedUserError: cannot write x: the disk is full\n'
    )
    assert RelayedUserError(text).message == "cannot write x: the disk is full"
    assert str(RelayedUserError("plain")) == "plain"


def test_debug_mode_shows_the_traceback(tmp_path):
    set_debug(True)
    try:
        with pytest.raises(DebugUserError, match="the disk is full") as e:
            write_failed(tmp_path / "m.pt", OSError(errno.ENOSPC, "No space left on device"))
        assert isinstance(e.value.__cause__, OSError)
    finally:
        set_debug(False)


def only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:
        atomic_save({"w": torch.zeros(10)}, disk / "m.pt")
        with pytest.raises(WriteError) as e:
            atomic_save({"w": torch.zeros(100_000)}, disk / "m.pt", what="the model")  # 400 KB: does not fit
        assert str(e.value) == (
            f"cannot write the model {disk / 'm.pt'}: the disk is full; the previous m.pt is kept. "
            f"Free some space on the disk of {disk}, then rerun"
        )
        assert e.value.errno == errno.ENOSPC
        assert only(disk) == ["m.pt"]  # no temporary left
        assert torch.equal(load_weights(disk / "m.pt")["w"], torch.zeros(10))


def test_full_disk_during_a_text_write_leaves_nothing(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:
        make_full(disk)
        with pytest.raises(WriteError, match="the disk is full; nothing was written"):
            atomic_write_json({"rows": list(range(10_000))}, disk / "report.json")
        assert only(disk) == ["filler"]


def test_read_only_disk_is_no_permission(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:
        atomic_write_json({"epoch": 1}, disk / "state.json")
        remount(disk, "ro")
        with pytest.raises(WriteError) as e:
            atomic_write_json({"epoch": 2}, disk / "state.json")
        assert str(e.value) == (
            f"cannot write {disk / 'state.json'}: no permission to write there (the disk is read-only); the "
            f"previous state.json is kept. Make {disk} writable, then rerun"
        )
        assert json.loads((disk / "state.json").read_text()) == {"epoch": 1}


def test_permission_error_on_rename_removes_the_temporary(tmp_path, monkeypatch):
    """Root writes anywhere, so the refusal is simulated where the kernel would give it: at the rename."""

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", src, dst)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match=r"state.json: no permission to write there; nothing was written\. Make"):
        atomic_write_json({"epoch": 1}, tmp_path / "state.json")
    monkeypatch.undo()
    assert only(tmp_path) == []


def test_folder_removed_during_the_write(tmp_path):
    folder = tmp_path / "out"
    with pytest.raises(WriteError) as e:
        with atomic_write(folder / "state.json", "w") as f:
            f.write("{}")
            shutil.rmtree(folder)  # another process clears the folder while the file is being written
    assert str(e.value).startswith(f"cannot write {folder / 'state.json'}: its folder was removed; nothing was")
    assert f"Keep {folder} in place while the run writes" in str(e.value)
    assert not folder.exists()


def test_other_errors_inside_the_block_pass_unchanged(tmp_path):
    """A missing input read while writing is the caller's error, not a failed write."""
    with pytest.raises(FileNotFoundError):
        with atomic_write(tmp_path / "copy.bin") as f:
            f.write((tmp_path / "missing.bin").read_bytes())
    assert only(tmp_path) == []


def test_written_files_get_the_users_umask(tmp_path):
    """Weights, metrics and pictures are readable by colleagues as any file the user creates (mkstemp gives 0600)."""
    import subprocess
    import sys

    code = (
        "import os, sys; os.umask(0o027); from bundle.atomic import atomic_write_json, atomic_save;"
        "atomic_write_json({}, sys.argv[1] + '/a.json'); atomic_save({}, sys.argv[1] + '/b.pt')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)  # the umask is read at import
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"a.json": 0o640, "b.pt": 0o640}
    atomic_write_json({}, tmp_path / "c.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o666 & ~mask
