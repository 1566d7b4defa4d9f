"""bundle.ssl.methods: one ``ssl_method`` id per pretraining config, and output files that never collide."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from monai.bundle import ConfigParser

from bundle.ssl.methods import INPAINTING_METHODS, METHODS, PRETEXT_METHODS, mask_mode_of, output_name
from tests.conftest import ROOT

CONFIGS = {
    "configs/pretrain_contrastive.json": [(m, mi) for m in METHODS for mi in (False, True)],
    "configs/pretrain_inpainting.json": [(m, False) for m in INPAINTING_METHODS],
    "configs/pretrain_pretext.json": [(m, False) for m in PRETEXT_METHODS],
}


def test_mask_modes_and_unknown_names():
    assert {m: mask_mode_of(m) for m in INPAINTING_METHODS} == {
        "inpainting": "blocks",
        "outpainting": "outpaint",
        "group_masked": "group",
    }
    with pytest.raises(ValueError, match="unknown ssl_method 'blocks'; choose one of inpainting, outpainting"):
        mask_mode_of("blocks")
    assert output_name("SimCLR", "true") == "simclr_micle" and output_name("moco") == "moco"


def test_every_method_of_every_config_writes_its_own_files(tmp_path):
    """All pretraining methods sharing one ckpt_dir: no two write the same weights or resume file."""
    outputs, resumes = {}, {}
    for config, variants in CONFIGS.items():
        for method, multi_instance in variants:
            parser = ConfigParser()
            parser.read_config(str(ROOT / config))
            parser.update({"bundle_root": str(ROOT), "ssl_method": method, "ckpt_dir": str(tmp_path)})
            if "multi_instance" in parser:
                parser["multi_instance"] = multi_instance
            key = f"{config}:{method}:{multi_instance}"
            outputs[key] = parser.get_parsed_content("pretrained_out")
            resumes[key] = parser.get_parsed_content("resume_ckpt")
            assert outputs[key].startswith(str(tmp_path)) and method in outputs[key]
    assert len(set(outputs.values())) == len(outputs) == 4 * 2 + 3 + 2
    assert len(set(resumes.values())) == len(resumes)
    assert not set(outputs.values()) & set(resumes.values())


def test_what_differs_per_method_has_a_name():
    from bundle.ssl.methods import pretext_options, reconstruction_keys, reconstruction_views, replace_prob_of
    from bundle.ssl.monitor import probe_entries, probe_loaders

    assert (
        replace_prob_of("group_masked") == 0.3 and replace_prob_of("Inpainting") == replace_prob_of("outpainting") == 0
    )
    with pytest.raises(ValueError, match="unknown ssl_method 'simclr'"):
        replace_prob_of("simclr")
    assert pretext_options("jigsaw", 30, 0.9) == {"num_permutations": 30, "tile_fraction": 0.9}
    assert pretext_options("rotation", 30, 0.9) == {}
    assert [reconstruction_views(w) for w in (0, 0.0, 0.5)] == [1, 1, 2]
    assert reconstruction_keys(1) == ["image", "target", "recon_mask"]
    assert reconstruction_keys(2) == ["image", "target", "recon_mask", "image_2", "recon_mask_2"]
    entries = [{"image": "a", "label": 0}, {"image": "b"}, {"image": "c", "label": None}, {"image": "d", "label": 2}]
    assert [e["image"] for e in probe_entries(entries, 5)] == ["a", "d"] and probe_entries(entries, 0) == []
    full, empty = SimpleNamespace(dataset=[1, 2]), SimpleNamespace(dataset=[])
    assert probe_loaders(full, full, 5) == [full, full]
    assert probe_loaders(full, full, 0) is None and probe_loaders(full, empty, 5) is None
    assert probe_loaders(empty, full, 5) is None
