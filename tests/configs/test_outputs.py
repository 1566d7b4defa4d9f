"""What a run leaves and prints: runs stay apart, a finished run keeps its results only, no warning in a default run.

The shared tiny runs (``trained_tiny``, ``evaluated_tiny``, ``inferred_tiny``) are the default workflows at
demo size, run as a user would; tests/configs/test_pretrain_contrastive_config.py checks pretraining's output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from bundle.workflow import CONFIGS, ROOT, WORKFLOW_CONFIGS, parsed
from tests.helpers import warning_lines

# ids naming what a run writes: its folders and files
WRITTEN = ("ckpt_dir", "output_dir", "cache_dir", "pretrained_out", "resume_ckpt", "output_root")
WORKFLOWS = {k: v for k, v in WORKFLOW_CONFIGS.items() if k != "curriculum"}  # the curriculum: output_root


def written_paths(configs: list[str], ckpt_dir: Path) -> dict[str, str]:
    """The written ids a config has, parsed with ``ckpt_dir`` and every other setting at its default."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f"{c}.json") for c in configs])
    ids = [i for i in WRITTEN if i in parser.config]
    return dict(zip(ids, parsed(configs, {"ckpt_dir": str(ckpt_dir)}, *ids)))


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_runs_with_other_ckpt_dirs_share_no_output(name, tmp_path):
    """Every folder and file a workflow writes lies in its ckpt_dir: two runs differing only there never mix."""
    a, b = (written_paths(WORKFLOWS[name], tmp_path / run) for run in ("a", "b"))
    assert a and set(a) == set(b)
    for key in a:
        assert Path(a[key]).resolve().is_relative_to(tmp_path / "a"), (key, a[key])
        assert Path(b[key]).resolve().is_relative_to(tmp_path / "b"), (key, b[key])
    if "output_dir" in a:  # each workflow its own folder: evaluation never writes over training's curves
        assert Path(a["output_dir"]).resolve() != (tmp_path / "a").resolve()


def test_pretraining_writes_outside_models_by_default():
    for name in ("pretrain_contrastive", "pretrain_inpainting", "pretrain_pretext"):
        (ckpt_dir,) = parsed([name], {}, "ckpt_dir")
        assert Path(ckpt_dir).resolve().is_relative_to(ROOT / "runs"), (name, ckpt_dir)
    assert Path(parsed(["pretrain_curriculum"], {}, "output_root")[0]).resolve().is_relative_to(ROOT / "runs")


def test_default_runs_print_no_warning(trained_tiny, evaluated_tiny, inferred_tiny):
    for run in (trained_tiny, evaluated_tiny, inferred_tiny):
        assert run.proc.returncode == 0
        assert warning_lines(run.log) == [], run.proc.args[:8]
    assert "tensor(" not in evaluated_tiny.log  # metrics as numbers, not tensors' text
    assert "Evaluate it on the test patients:" in trained_tiny.log  # training ends with the next command
    assert f"--ckpt_dir {trained_tiny.models}" in trained_tiny.log
