"""Where loaded images are kept (``cache`` memory | disk | none), and a real fine-tuning run on a compact cache."""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import types
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Compose

from bundle.atomic import WriteError
from bundle.data.cache import (
    CACHE_KINDS,
    DiskCache,
    LoggedCacheDataset,
    cached_dataset,
    compact_heap,
    wants_compact_heap,
)
from bundle.data.datalist import prepare_splits
from bundle.data.precision import CACHE_DTYPES, cached_bytes
from bundle.data.readers import CXRReadError
from bundle.engines.user_errors import UserErrorPassThrough
from bundle.errors import UserError
from bundle.settings import RULES
from tests.conftest import CLASS_NAMES, ROOT, write_dataset
from tests.helpers import launch, make_full, small_disk

SIZE = 32


def load_transforms(**override) -> Compose:
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser.update({"bundle_root": str(ROOT), "image_size": SIZE, **override})
    return Compose(parser.get_parsed_content("load_transforms"))


@pytest.fixture
def entries(tmp_path: Path) -> list[dict]:
    root = tmp_path / "data"
    write_dataset(root, n_per_class=2)
    splits = prepare_splits(root / "datalist.json", root, CLASS_NAMES, val_fraction=0, test_fraction=0)
    return splits["training"]


def test_the_rules_name_every_kind_and_precision():
    assert "must be one of memory, disk, none" in RULES["cache"]("ram")
    assert all(RULES["cache"](k) is None for k in CACHE_KINDS)
    assert "must be one of uint8, uint16, float32" in RULES["cache_dtype"]("int8")
    assert all(RULES["cache_dtype"](k) is None for k in CACHE_DTYPES)
    assert RULES["cache_dir"](None) == "must be the path of a folder"


def test_each_kind_is_its_monai_dataset(entries, tmp_path):
    transform = load_transforms()
    memory = cached_dataset(entries, transform, cache="memory", num_workers=0)
    disk = cached_dataset(entries, transform, cache="DISK", cache_dir=str(tmp_path / "c"))
    plain = cached_dataset(entries, transform, cache="none")
    assert type(memory) is LoggedCacheDataset and isinstance(memory, CacheDataset)
    assert type(disk) is DiskCache and isinstance(disk, PersistentDataset) and type(plain) is Dataset
    for dataset in (memory, disk, plain):
        item = dataset[0]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, SIZE, SIZE)
        assert torch.equal(item["image"], memory[0]["image"])
    with pytest.raises(ValueError, match="cache must be one of memory, disk, none, got 'ram'"):
        cached_dataset(entries, transform, cache="ram")
    with pytest.raises(ValueError, match="cache disk needs a cache_dir"):
        cached_dataset(entries, transform, cache="disk")


def test_disk_cache_is_written_once_and_read_back(entries, tmp_path):
    """A first build writes one file per image under cache_dir; a second build reads them (the sources are gone)."""
    cache_dir = tmp_path / "cache"
    first = cached_dataset(entries, load_transforms(), cache="disk", cache_dir=str(cache_dir))
    items = [first[i] for i in range(len(first))]
    files = sorted(cache_dir.glob("*.pt"))
    assert len(files) == len(entries)
    stored = torch.load(files[0], weights_only=True)  # nothing in a cache file is executed
    assert stored["image"].dtype == torch.uint8 and stored["mask"].dtype == torch.uint8
    for e in entries:  # the second build can only succeed from the files
        Path(e["image"]).unlink()
    second = cached_dataset(entries, load_transforms(), cache="disk", cache_dir=str(cache_dir))
    for i, item in enumerate(items):
        again = second[i]
        assert torch.equal(again["image"], item["image"]) and torch.equal(again["mask"], item["mask"])
    assert sorted(cache_dir.glob("*.pt")) == files
    # other loading settings never read these files: another image size or precision names other files
    other = cached_dataset(entries, load_transforms(cache_dtype="float32"), cache="disk", cache_dir=str(cache_dir))
    with pytest.raises(RuntimeError, match="LoadCXRd") as failed:
        other[0]  # not cached under these settings, and the source is gone
    assert isinstance(failed.value.__cause__, CXRReadError) and "file not found" in str(failed.value.__cause__)


def test_memory_cache_holds_compact_images(entries):
    """The memory cache's contents: uint8 images and bit-packed masks, 1/4 of float32 for the images."""
    sizes = {}
    for name in ("uint8", "float32"):
        dataset = cached_dataset(entries, load_transforms(cache_dtype=name), cache="memory", num_workers=0)
        sizes[name] = sum(cached_bytes(item) for item in dataset._cache) / len(dataset)
    pixels = SIZE * SIZE
    assert sizes["uint8"] == pixels + pixels // 8 + 12  # image, mask bits, label (int64) and has_mask (float32)
    assert sizes["float32"] - sizes["uint8"] == 3 * pixels


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_one_epoch_on_the_sample_with_a_uint8_cache(cache, tmp_path):
    """configs/train.json on data/sample at 64 px, cache_dtype uint8: finite training loss and validation AUC."""
    overrides = {
        "bundle_root": str(ROOT),
        "image_size": 64,
        "batch_size": 16,
        "num_workers": 0,
        "max_epochs": 1,
        "cache": cache,
        "cache_dtype": "uint8",
        "cache_dir": str(tmp_path / "cache"),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "eval"),
        "show_progress": False,
    }
    if cache == "disk":  # the disk path on a fifth of the sample: the memory run covers all of it
        overrides["label_fraction"] = 0.2
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "train.json"), workflow_type="train", logging_file=False, **overrides
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    batch = next(iter(wf.parser.get_parsed_content("validate#dataloader")))
    assert batch["image"].dtype == torch.uint8  # validation batches travel compact, converted on the device
    wf.run()
    wf.finalize()
    assert losses and all(math.isfinite(x) for x in losses), losses
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_auc", "val_dice"} <= set(metrics)  # validation ran on the compact batches
    if cache == "disk":
        assert len(list((tmp_path / "cache").glob("*.pt"))) > 0


# ---- a disk cache on a full disk ---------------------------------------------------------------------------------


def test_full_disk_cache_ends_in_one_message(entries, tmp_path, monkeypatch):
    monkeypatch.delenv("CXR_DEBUG", raising=False)
    with small_disk(tmp_path / "cache", 64) as cache_dir:
        make_full(cache_dir)
        dataset = cached_dataset(entries, load_transforms(), cache="disk", cache_dir=str(cache_dir))
        with pytest.raises(WriteError) as e:
            dataset[0]
        assert str(e.value).startswith(f"cannot write the disk cache file {cache_dir}/")
        assert ".pt: the disk is full; the cache files written before are kept. Free some space" in str(e.value)
        assert sorted(p.name for p in cache_dir.iterdir()) == ["filler"]  # no temporary, no torn file


def test_full_disk_cache_in_a_worker_ends_the_run_with_its_message(entries, tmp_path, monkeypatch):
    """A DataLoader worker cannot end the run itself: its message travels back and the engine stops with it."""
    monkeypatch.delenv("CXR_DEBUG", raising=False)
    with small_disk(tmp_path / "cache", 64) as cache_dir:
        make_full(cache_dir)
        dataset = cached_dataset(entries, load_transforms(), cache="disk", cache_dir=str(cache_dir))
        engine = Engine(lambda engine, batch: None)
        UserErrorPassThrough().attach(engine)
        with pytest.raises(UserError) as e:
            engine.run(DataLoader(dataset, batch_size=2, num_workers=1), max_epochs=1)
        assert str(e.value).startswith(f"cannot write the disk cache file {cache_dir}/")
        assert "Traceback" not in str(e.value) and "the disk is full" in str(e.value)


def test_filling_the_memory_cache_logs_its_progress_when_not_on_a_terminal(caplog, monkeypatch):
    """Without a bar (``progress`` false: the configs' ``show_progress`` off a terminal) a line every 5 percent when
    10 s have passed since the last, the last with the total time; with a bar, tqdm draws it and nothing is logged."""
    from bundle.data import cache

    entries = [{"index": i} for i in range(40)]
    with caplog.at_level("INFO", logger="bundle.data.cache"):
        dataset = cached_dataset(entries, Compose([lambda d: d]), cache="memory", num_workers=2, progress=False)
    assert len(dataset._cache) == 40
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "caching 40 images in memory" and len(lines) == 2  # filled within 10 s: start and end
    assert lines[-1].startswith("caching 40 / 40 images (100%)") and " done in " in lines[-1]
    caplog.clear()
    clock = iter(range(0, 1000, 4))  # 4 s per image: 8 s per 5 % step, so a line at every other step
    # the cache module's clock only: patching time.monotonic itself would also feed the worker threads' waits
    monkeypatch.setattr(cache, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with caplog.at_level("INFO", logger="bundle.data.cache"):
        cached_dataset(entries, Compose([lambda d: d]), cache="memory", num_workers=1, progress=False)
    lines = [r.getMessage() for r in caplog.records][1:]
    assert lines[0].startswith("caching 4 / 40 images (10%), ") and "images/s" in lines[0] and "left" in lines[0]
    assert [int(line.split()[1]) for line in lines] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    caplog.clear()
    with caplog.at_level("INFO", logger="bundle.data.cache"):
        cached_dataset(entries, Compose([lambda d: d]), cache="memory", num_workers=1, progress=True)
    assert not caplog.records


def test_a_large_memory_cache_says_the_disk_cache_starts_at_once(caplog, monkeypatch):
    from bundle.data import cache

    monkeypatch.setattr(cache, "LARGE_CACHE", 10)
    with caplog.at_level("INFO", logger="bundle.data.cache"):
        cached_dataset([{"index": i} for i in range(10)], Compose([lambda d: d]), cache="memory", progress=False)
    first = caplog.records[0].getMessage()
    assert first.startswith("caching 10 images in memory before the first iteration") and "--cache disk" in first


# ---- glibc's heap while a cache fills, and after ------------------------------------------------------------------

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux only)")
# in a fresh interpreter (a heap with no free 1 MB block yet): the page faults of allocating, touching and freeing
# a 1 MB block (above the filling threshold, 128 KB, and below a transparent huge page) 20 times, inside
# compact_heap and after it
HEAP_PROBE = """
import ctypes, resource
from bundle.data.cache import compact_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
def faults(times=20, size=1 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
with compact_heap() as compact:
    filling = faults()
print(compact, filling, faults())
"""


@glibc
def test_compact_heap_maps_large_blocks_while_filling_and_reuses_them_after():
    """While filling, every 1 MB block is mapped and zero-filled anew (256 page faults each); after it, the block
    comes back from the heap, as training's activations then do at every step."""
    proc = launch([sys.executable, "-c", HEAP_PROBE], env={"PYTHONPATH": str(ROOT)}, timeout=120, check=True)
    compact, filling, after = proc.stdout.split()
    pages = (1 << 20) // resource.getpagesize()
    assert compact == "True" and int(filling) >= 20 * pages * 0.9
    assert int(after) < int(filling) / 10, (filling, after)
    with compact_heap(enabled=False) as compact:
        assert not compact  # nothing changes: glibc's moving threshold (or what was set before) stays


def test_a_cache_of_compact_images_fills_inside_compact_heap(entries, monkeypatch):
    """uint8 and uint16 caches fill inside ``compact_heap``; float32 (the survivors are the large blocks) and
    transforms without ``Compactd`` keep glibc's moving threshold."""
    from bundle.data import cache

    seen = []

    @contextlib.contextmanager
    def recording(enabled: bool = True):
        seen.append(enabled)
        yield enabled

    monkeypatch.setattr(cache, "compact_heap", recording)
    for name in ("uint8", "uint16", "float32"):
        cached_dataset(entries, load_transforms(cache_dtype=name), cache="memory", num_workers=0)
    cached_dataset(entries, Compose([lambda d: d]), cache="memory", num_workers=0, progress=True)
    assert seen == [True, True, False, False]
    nested = Compose([Compose([lambda d: d]), load_transforms()])
    assert wants_compact_heap(nested) and wants_compact_heap(list(load_transforms().transforms))
