"""Fingerprints of checked files: taken by the entry check's one decode, kept under ``cache_dir`` and reused while a
file's size and mtime hold, so that the next check decodes nothing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bundle.data import fingerprints
from bundle.data.datalist import check_entries, prepare_splits
from bundle.data.fingerprints import CACHE_FILE, Fingerprint, FingerprintTable, decode_files, pixel_hash
from bundle.data.readers import read_raw
from tests.conftest import CLASS_NAMES, write_dataset


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The paths the check decodes, in order (counted at the reader; the check decodes in threads below 512
    files, in this process)."""
    seen: list[str] = []

    def counting(path):
        seen.append(str(path))
        return read_raw(path)

    monkeypatch.setattr(fingerprints, "read_raw", counting)
    return seen


def test_a_second_check_decodes_nothing(tmp_path, decodes):
    datalist = write_dataset(tmp_path / "data", n_per_class=2)
    files = len(list((tmp_path / "data" / "images").iterdir())) + len(list((tmp_path / "data" / "masks").iterdir()))
    first = prepare_splits(datalist, tmp_path / "data", CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert len(decodes) == files  # every image and mask once
    saved = json.loads((tmp_path / "cache" / CACHE_FILE).read_text())
    assert len(saved["files"]) == files
    decodes.clear()
    again = prepare_splits(datalist, tmp_path / "data", CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert decodes == [] and again == first
    # a file rewritten in place (new mtime) is decoded again, and only that one
    image = tmp_path / "data" / first["training"][0]["image"]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    prepare_splits(datalist, tmp_path / "data", CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert decodes == [str(image)]


def test_a_broken_file_is_reported_every_time_and_the_sound_ones_recorded(tmp_path, decodes):
    datalist = write_dataset(tmp_path / "data", n_per_class=2)
    (tmp_path / "data" / "images" / "c0_1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    for _ in range(2):
        with pytest.raises(SystemExit, match=r"c0_1.png\): image cannot decode"):
            prepare_splits(datalist, tmp_path / "data", CLASS_NAMES, cache_dir=tmp_path / "cache")
    assert decodes.count(str(tmp_path / "data" / "images" / "c0_1.png")) == 2
    assert len(set(decodes)) == len(decodes) - 1  # the others once: the first run recorded them


def test_each_file_is_decoded_once_however_many_entries_name_it(tmp_path, decodes):
    write_dataset(tmp_path, n_per_class=1)
    entry = {"image": str(tmp_path / "images" / "c0_0.png"), "label": 0}
    assert check_entries([dict(entry, _id=f"training[{i}]") for i in range(5)], 4) == []
    assert decodes == [entry["image"]]


def test_an_unreadable_or_foreign_cache_file_only_costs_time(tmp_path, caplog):
    path = tmp_path / CACHE_FILE
    path.write_text("{not json")
    with caplog.at_level("WARNING"):
        assert FingerprintTable(path).digests() == {}
    assert "every file will be decoded again" in caplog.text
    path.write_text(json.dumps({"format": "something else", "files": {"/a.png": [1, 2, 3, 4, "h"]}}))
    assert FingerprintTable(path).get("/a.png") is None


def test_processes_and_threads_give_the_same_fingerprints(tmp_path, monkeypatch):
    write_dataset(tmp_path, n_per_class=2)
    paths = sorted(str(p) for p in (tmp_path / "images").iterdir()) + [str(tmp_path / "missing.png")]
    threads = list(decode_files(paths, workers=2))
    monkeypatch.setattr(fingerprints, "PROCESSES_FROM", 1)
    monkeypatch.setattr(fingerprints, "PROCESS_CORES", 2)
    processes = list(decode_files(paths, workers=2))
    assert processes == threads
    assert threads[-1] == (paths[-1], None, "file not found")
    found = threads[0][2]
    assert isinstance(found, Fingerprint) and found.digest == pixel_hash(read_raw(paths[0]))


def test_equal_pixels_hash_alike_and_others_do_not():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert pixel_hash(a) == pixel_hash(a.copy()) != pixel_hash(a.reshape(4, 3))
    assert pixel_hash(a) != pixel_hash(a + 1)


def test_a_cache_folder_that_cannot_be_written_only_warns(tmp_path, monkeypatch, caplog):
    """Evaluating from a read-only model folder (its cache_dir) must not stop: the next run decodes again."""
    write_dataset(tmp_path / "data", n_per_class=1)
    table = FingerprintTable(tmp_path / "cache" / CACHE_FILE)
    table.check(sorted(str(p) for p in (tmp_path / "data" / "images").glob("*.png")), workers=1)

    def refuse(*args, **kwargs):
        from bundle.atomic import write_failed

        write_failed(tmp_path / "cache" / CACHE_FILE, 30)  # EROFS: a read-only disk

    monkeypatch.setattr(fingerprints, "atomic_write_json", refuse)
    monkeypatch.delenv("CXR_DEBUG", raising=False)
    with caplog.at_level("WARNING"):
        table.save()
    assert "the checked files could not be recorded" in caplog.text and "read-only" in caplog.text
