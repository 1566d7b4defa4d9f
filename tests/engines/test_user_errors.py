"""bundle.engines.user_errors: a failed write inside an engine, in a library's writer or in a DataLoader worker,
ends the run with its one message."""

from __future__ import annotations

import errno

import pytest
from ignite.engine import Engine, Events

from bundle.engines.user_errors import UserErrorPassThrough
from bundle.errors import RelayedUserError, UserError, set_debug
from tests.helpers import make_full, small_disk


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    for key in ("CXR_DEBUG", "MONAI_DEBUG_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    set_debug(False)


def engine_raising(error: BaseException) -> Engine:
    engine = Engine(lambda engine, batch: None)
    UserErrorPassThrough().attach(engine)

    def handler(_):
        raise error

    engine.add_event_handler(Events.EPOCH_COMPLETED, handler)
    return engine


def test_a_librarys_full_disk_names_its_file(tmp_path):
    path = tmp_path / "metrics.csv"
    engine = engine_raising(OSError(errno.ENOSPC, "No space left on device", str(path)))
    with pytest.raises(UserError) as e:
        engine.run([0], max_epochs=1)
    assert str(e.value) == (
        f"cannot write {path}: the disk is full; the files written before are kept. Free some space on the disk of "
        f"{tmp_path}, then rerun"
    )


def test_a_missing_file_is_not_taken_for_a_failed_write(tmp_path):
    """ENOENT and EACCES may be a read's: such an error stays what it is."""
    engine = engine_raising(FileNotFoundError(errno.ENOENT, "No such file or directory", str(tmp_path / "in.png")))
    with pytest.raises(FileNotFoundError):
        engine.run([0], max_epochs=1)


def test_a_relayed_worker_message_ends_the_run():
    engine = engine_raising(RelayedUserError("cannot write x: the disk is full"))
    with pytest.raises(UserError, match="^cannot write x: the disk is full$"):
        engine.run([0], max_epochs=1)


def test_monais_tensorboard_handler_on_a_full_disk_names_its_event_file(tmp_path, capfd):
    from monai.handlers import TensorBoardStatsHandler

    with small_disk(tmp_path / "tb", 64) as disk:
        engine = Engine(lambda engine, batch: 1.0)
        UserErrorPassThrough().attach(engine)
        TensorBoardStatsHandler(log_dir=str(disk), output_transform=lambda out: out).attach(engine)
        make_full(disk)
        with pytest.raises(UserError) as e:
            engine.run(range(50), max_epochs=20)
        assert str(e.value).startswith(f"cannot write {disk}/events.out.tfevents.")
        assert "the disk is full; the files written before are kept" in str(e.value)
    assert "Traceback" not in "".join(capfd.readouterr())  # not even from TensorBoard's writer thread
