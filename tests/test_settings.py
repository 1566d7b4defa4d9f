"""bundle.settings.as_bool: the one parser behind every boolean id."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.settings import as_bool


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        ("true", True),
        ("False", False),
        (" TRUE ", True),
        ("1", True),
        ("0", False),
        (1, True),
        (0, False),
        (np.bool_(True), True),
    ],
)
def test_accepted_spellings(value, expected):
    assert as_bool(value, "resume") is expected


@pytest.mark.parametrize("value", ["yes", "no", "", "flase", 2, -1, 0.5, None, [True]])
def test_anything_else_is_refused_with_the_id_name(value):
    with pytest.raises(ValueError, match=r"^multi_instance must be True or False"):
        as_bool(value, "multi_instance")


def test_every_boolean_consumer_parses_strings():
    """The CLI passes ``--multi_label false`` as the string 'false': every consumer reads it as False."""
    from bundle.data.transforms import ClassLabeld
    from bundle.engines.multitask import MultiTaskOutputs
    from bundle.evaluation.attention import LungAttentionReport
    from bundle.inference.outputs import InferenceOutputs
    from bundle.inference.writer import PredictionWriter
    from bundle.saliency import SaliencyInferer

    assert ClassLabeld(4, multi_label="false").multi_label is False
    assert MultiTaskOutputs(4, multi_label="true").multi_label is True
    assert InferenceOutputs(multi_label="0").multi_label is False
    assert SaliencyInferer("none", multi_label="1").multi_label is True
    assert LungAttentionReport("out", ["a"], multi_label="false").multi_label is False
    writer = PredictionWriter("out", ["a"], write_masks="false", write_saliency="true", write_overlays="0")
    assert (writer.write_masks, writer.write_saliency, writer.write_overlays) == (False, True, False)
    with pytest.raises(ValueError, match="write_overlays"):
        PredictionWriter("out", ["a"], write_overlays="maybe")
