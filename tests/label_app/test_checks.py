"""label_app/lib/checks.py in the bundle's environment: what the app refuses, and that its messages name files,
never server folders (the server-side tests drive the same checks over HTTP)."""

from __future__ import annotations

import pytest

from label_app.lib.checks import RefusedError, check_id, check_train_options, parse_params, without_paths

CONFIG = {"max_epochs": 10, "learning_rate": 1e-4, "val_split": 0.2, "device": ["cpu"], "name": "train_01"}


def test_messages_name_files_not_folders():
    text = "upload x (/tmp/abc/x.png): mask /work/main/labels/final/x.png: cannot decode; see http://a/b"
    assert without_paths(text) == "upload x (x.png): mask x.png: cannot decode; see http://a/b"
    assert RefusedError(422, "no /srv/data/studies/a.dcm").detail == "no a.dcm"


@pytest.mark.parametrize("text, status", [("{not json", 422), ("[1]", 422)])
def test_params_must_be_a_json_object(text, status):
    with pytest.raises(RefusedError) as e:
        parse_params(text)
    assert e.value.status == status and "params" in e.value.detail
    assert parse_params("") == {} and parse_params('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("value, status", [("/etc/passwd", 400), ("../x", 400), ("a b", 422), ("", 422)])
def test_ids_are_not_paths(value, status):
    with pytest.raises(RefusedError) as e:
        check_id(value)
    assert e.value.status == status and "/etc" not in e.value.detail
    assert check_id("hannover_0a7f.png") == "hannover_0a7f.png"


def test_train_options():
    check_train_options({"max_epochs": 2, "learning_rate": 1e-3, "device": "cpu", "client_id": "me"}, CONFIG, "m")
    with pytest.raises(RefusedError) as e:
        check_train_options({"max_epochs": True, "val_split": 1, "device": "tpu", "name": "../x", "x": 1}, CONFIG, "m")
    for part in ("max_epochs=True", "val_split=1", "device='tpu': one of ['cpu']", "name='../x'", "unknown option 'x'"):
        assert part in e.value.detail
