"""bundle.runlock: one run per output folder, stale locks of killed runs taken over, nothing left after a clean run."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundle import runlock
from bundle.errors import UserError
from tests.helpers import ROOT, bundle_in_process, launch, make_full, remount, run_bundle, small_disk, start

LOCK = runlock.LOCK_NAME
# a holder: locks the folders named on its command line, says so, then waits until its stdin closes
HOLDER = (
    "import sys; from bundle.runlock import lock; lock(*sys.argv[1:]); print('locked', flush=True); sys.stdin.read()"
)


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    for name in ("RANK", "CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield
    runlock.release_all()


ON_PATH = {"PYTHONPATH": str(ROOT)}  # `python -c` finds this checkout's bundle package


def start_holder(*folders: Path) -> subprocess.Popen:
    """A second process holding the locks of ``folders`` (waits for its 'locked' line)."""
    proc = start(
        [sys.executable, "-c", HOLDER, *folders],
        env=ON_PATH,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def run_locker(*args: str) -> subprocess.CompletedProcess:
    """``lock(*args)`` in a fresh process that then exits normally."""
    code = "import sys; from bundle.runlock import lock; lock(*sys.argv[1:])"
    return launch([sys.executable, "-c", code, *args], env=ON_PATH, timeout=120)


def test_second_process_stops_naming_the_first(tmp_path):
    folder = tmp_path / "models"
    holder = start_holder(folder)
    try:
        record = runlock.read_record(folder)
        assert record["pid"] == holder.pid and record["host"] and record["started"] and "-c" in record["command"]
        second = run_locker(str(folder))
        assert second.returncode == 1
        assert f"{folder} is in use by another run: pid {holder.pid} on host {record['host']}" in second.stderr
        assert f"started {record['started']}" in second.stderr and "wait for it to finish" in second.stderr
        assert "Traceback" not in second.stdout + second.stderr
        assert runlock.read_record(folder)["pid"] == holder.pid  # the loser leaves the holder's record alone
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    assert not (folder / LOCK).exists()  # a clean exit removes the lock file


def test_in_process_contender_names_the_option(tmp_path):
    folder = tmp_path / "eval"
    holder = start_holder(folder)
    try:
        with pytest.raises(UserError) as err:
            runlock.lock(output_dir=folder)
        message = str(err.value)
        assert message.startswith(f"output_dir {folder} is in use by another run: pid {holder.pid}")
        assert "give this run another --output_dir" in message
    finally:
        holder.communicate("", timeout=60)
    assert runlock.held() == []


def test_killed_holder_lock_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "models"
    holder = start_holder(folder)
    started = runlock.read_record(folder)["started"]
    holder.send_signal(signal.SIGKILL)  # no atexit: the file stays, the kernel drops the lock
    holder.communicate(timeout=60)
    assert (folder / LOCK).exists()
    with caplog.at_level(logging.WARNING, logger="bundle.runlock"):
        runlock.lock(ckpt_dir=folder)
    assert f"taking over the stale lock of pid {holder.pid} (host" in caplog.text
    assert f"started {started}, no longer running)" in caplog.text
    assert runlock.read_record(folder)["pid"] == os.getpid()
    runlock.release(folder)
    assert not (folder / LOCK).exists()


def test_stale_lock_taken_over_by_a_fresh_process(tmp_path):
    folder = tmp_path / "models"
    holder = start_holder(folder)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    third = run_locker(str(folder))
    assert third.returncode == 0, third.stderr
    assert f"taking over the stale lock of pid {holder.pid}" in third.stderr
    assert not (folder / LOCK).exists()


def test_reentrant_and_same_folder_once(tmp_path):
    folder = tmp_path / "run"
    link = tmp_path / "link"
    runlock.lock(folder)
    link.symlink_to(folder)
    runlock.lock(folder, None, link, ckpt_dir=folder, output_dir=link)  # all the same folder, already held
    assert runlock.held() == [os.path.realpath(folder)]
    assert runlock.read_record(folder)["pid"] == os.getpid()
    runlock.release(link)
    assert runlock.held() == [] and not (folder / LOCK).exists()
    runlock.lock(ckpt_dir=tmp_path / "a", output_dir=tmp_path / "a")
    assert runlock.held() == [os.path.realpath(tmp_path / "a")]
    runlock.release_all()
    assert runlock.held() == [] and not (tmp_path / "a" / LOCK).exists()


def test_all_or_nothing(tmp_path):
    free, busy = tmp_path / "free", tmp_path / "busy"
    holder = start_holder(busy)
    try:
        with pytest.raises(UserError, match=f"ckpt_dir {busy} is in use by another run: pid {holder.pid}"):
            runlock.lock(output_dir=free, ckpt_dir=busy)
        assert runlock.held() == [] and not (free / LOCK).exists()
    finally:
        holder.communicate("", timeout=60)


def test_other_ranks_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    runlock.lock(ckpt_dir=tmp_path / "models")
    assert runlock.held() == [] and not (tmp_path / "models").exists()
    monkeypatch.setenv("RANK", "0")
    runlock.lock(ckpt_dir=tmp_path / "models")
    assert runlock.held() == [os.path.realpath(tmp_path / "models")]


def test_none_is_skipped():
    runlock.lock(None, ckpt_dir=None)
    assert runlock.held() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folders(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError) as err:
            runlock.lock(ckpt_dir=locked / "models")
        assert str(err.value).startswith(f"ckpt_dir {locked / 'models'} cannot be created (Permission denied)")
        with pytest.raises(UserError) as err:
            runlock.lock(output_dir=locked)
        assert str(err.value).startswith(f"output_dir {locked} is not writable: cannot open its lock file")
        assert "Give this run a writable --output_dir" in str(err.value)
    finally:
        locked.chmod(0o700)
    assert runlock.held() == []


def test_folders_that_cannot_hold_a_lock(tmp_path):
    # the same failures as a read-only folder, reachable as root too
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=f"^output_dir {tmp_path / 'file'} is not a folder: a file of that name"):
        runlock.lock(output_dir=tmp_path / "file")
    with pytest.raises(UserError, match=f"^ckpt_dir {tmp_path / 'file' / 'models'} cannot be created"):
        runlock.lock(ckpt_dir=tmp_path / "file" / "models")
    (tmp_path / "eval" / LOCK).mkdir(parents=True)
    with pytest.raises(UserError) as err:
        runlock.lock(ckpt_dir=tmp_path / "models", output_dir=tmp_path / "eval")
    assert str(err.value).startswith(f"output_dir {tmp_path / 'eval'} is not writable: cannot open its lock file")
    assert runlock.held() == [] and not (tmp_path / "models" / LOCK).exists()
    with pytest.raises(UserError, match="^a run folder is empty"):
        runlock.lock("")


def test_read_only_disk_names_the_cause(tmp_path):
    """Root may write into a chmod 0o555 folder, not into a read-only file system."""
    with small_disk(tmp_path / "ro", 64) as disk:
        remount(disk, "ro")
        with pytest.raises(UserError) as err:
            runlock.lock(ckpt_dir=disk / "models")
        assert str(err.value) == (
            f"ckpt_dir {disk / 'models'} cannot be created (Read-only file system): no permission to write there "
            "(the disk is read-only); nothing was written. Give this run a writable --ckpt_dir"
        )
        with pytest.raises(UserError, match=f"^output_dir {disk} is not writable: cannot open its lock file .*"):
            runlock.lock(output_dir=disk)
    assert runlock.held() == []


def test_full_disk_while_writing_the_lock_record(tmp_path):
    with small_disk(tmp_path / "full", 64) as disk:
        make_full(disk)
        with pytest.raises(UserError) as err:
            runlock.lock(output_dir=disk)
        assert str(err.value).startswith(f"output_dir {disk}: cannot write its lock file {disk / LOCK} (No space left")
        assert str(err.value).endswith("the disk is full; nothing was written. Give this run a writable --output_dir")
        assert runlock.held() == [] and not (disk / LOCK).exists()


def test_replaced_lock_file_is_retried(tmp_path, monkeypatch):
    # a holder that removes its file between our open and our flock: the lock we get is on a dead inode
    folder = tmp_path / "models"
    real_flock = runlock.fcntl.flock
    calls = []

    def flock_after_removal(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(folder / LOCK)
        return real_flock(fd, op)

    monkeypatch.setattr(runlock.fcntl, "flock", flock_after_removal)
    runlock.lock(folder)
    assert len(calls) == 2
    fd = runlock._held[os.path.realpath(folder)].fd
    assert os.fstat(fd).st_ino == os.stat(folder / LOCK).st_ino


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the first run ended ({proc.returncode}) before taking its lock"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow  # a training held running while another tries its folders, then killed
def test_second_training_run_on_the_same_folders_stops(tiny_dataset, tmp_path):
    ckpt_dir, output_dir = tmp_path / "models", tmp_path / "eval"
    args = [
        "run",
        "--config_file",
        "configs/train.json",
        "--bundle_root",
        str(ROOT),
        "--dataset_dir",
        str(tiny_dataset),
        "--ckpt_dir",
        str(ckpt_dir),
        "--output_dir",
        str(output_dir),
        "--image_size",
        "64",
        "--num_workers",
        "0",
        "--show_progress",
        "false",
    ]
    first = start(
        [sys.executable, "-m", "monai.bundle", *args, "--max_epochs", "50"],
        env=ON_PATH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(ckpt_dir / LOCK, first)
        second = bundle_in_process(*args, "--max_epochs", "50")  # stops before any work: no process of its own
        assert first.poll() is None, "the first run finished before the second one started: give it more epochs"
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: its lock files stay behind
        first.wait()
    out = second.stdout + second.stderr
    assert second.returncode != 0
    assert f"{ckpt_dir} is in use by another run: pid {first.pid}" in out, out[-3000:]
    assert "Traceback" not in out
    assert (ckpt_dir / LOCK).exists() and (output_dir / LOCK).exists()

    # resume=false: the killed run may have saved a checkpoint with more epochs than this short run asks for
    third = run_bundle(*args, "--max_epochs", "1", "--resume", "false", check=False)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out[-3000:]
    assert out.count(f"taking over the stale lock of pid {first.pid}") == 2  # ckpt_dir and output_dir
    assert not (ckpt_dir / LOCK).exists() and not (output_dir / LOCK).exists()
