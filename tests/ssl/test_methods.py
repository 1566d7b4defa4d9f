"""bundle.ssl.methods: one ``ssl_method`` id per pretraining config, and output files that never collide."""

from __future__ import annotations

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
