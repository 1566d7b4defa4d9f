"""benchmarks.workflows: the bundle side of a training suite (speed ids, config values, the repeated datalist)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import suite_parser
from benchmarks.workflows import SpeedUp, repeat_datalist, speed_overrides
from tests.conftest import write_dataset


def test_speed_flags_are_config_overrides_only_when_given(tmp_path):
    """--channels_last / --compile / --amp_dtype set the config ids of those names; one a config lacks stops."""
    with_ids, without = tmp_path / "with.json", tmp_path / "without.json"
    with_ids.write_text(json.dumps({"channels_last": False, "compile": False, "amp_dtype": "float16"}))
    without.write_text(json.dumps({"amp": False}))
    parse = suite_parser("train").parse_args
    assert speed_overrides(parse([]), without) == {}
    given = parse(["--channels_last", "true", "--compile", "no", "--amp_dtype", "BFloat16"])
    assert speed_overrides(given, with_ids) == {"channels_last": True, "compile": False, "amp_dtype": "bfloat16"}
    with pytest.raises(SystemExit, match=f"--channels_last: {without} has no id channels_last"):
        speed_overrides(parse(["--channels_last", "true"]), without)
    with pytest.raises(SystemExit, match="--compile: configs/inference.json has no id compile"):
        speed_overrides(parse(["--compile", "true"]), "inference")  # a config named as bundle.workflow names it
    with pytest.raises(SystemExit):
        parse(["--amp_dtype", "int8"])


def test_speed_up_is_the_configs():
    speed = SpeedUp.from_config("train", {"channels_last": True})
    assert speed.channels_last and not speed.compile and speed.as_settings()["channels_last"] is True


def test_repeat_datalist_repeats_every_section_as_new_patients(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=2)  # 8 images of 4 patients, 4 with a mask
    path, rows = repeat_datalist(tmp_path / "data", 10, tmp_path)
    assert len(rows) == 16 and json.loads(Path(path).read_text())["training"] == rows
    assert all(Path(r[k]).is_absolute() and Path(r[k]).is_file() for r in rows for k in ("image", "mask") if k in r)
    assert sum("mask" in r for r in rows) == 8 and len({r["patient"] for r in rows}) == 8  # a repeat: new patients
    with pytest.raises(SystemExit, match="--dataset_dir .* has no datalist.json"):
        repeat_datalist(tmp_path, 1, tmp_path)
