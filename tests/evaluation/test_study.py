"""bundle.evaluation.study: the methods and protocols it knows, the split and datalists it writes, the commands of
its steps, and the steps that run once and are skipped once they finished (scripts/study.py is tested as a
command in tests/scripts/test_study.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

from bundle.evaluation import study
from bundle.ssl.methods import INPAINTING_METHODS, METHODS, PRETEXT_METHODS
from tests.conftest import CLASS_NAMES, ROOT, write_dataset

# a step's command: writes its output file (argv[1]), prints a line, and exits with the status argv[2]
STEP = "import pathlib, sys; print('step ran'); pathlib.Path(sys.argv[1]).write_text('x'); sys.exit(int(sys.argv[2]))"


def step(output: Path, status: int = 0) -> list[str]:
    return [sys.executable, "-c", STEP, str(output), str(status)]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    study.make_output_folder(tmp_path / "study")
    return tmp_path / "study"


def test_the_classes_are_the_configs():
    assert study.class_names() == CLASS_NAMES
    assert study.class_names() == CLASS_NAMES


def test_every_pretraining_of_the_bundle_is_a_method_with_its_config():
    registries = [*METHODS, *PRETEXT_METHODS, *INPAINTING_METHODS]
    assert set(study.METHODS) == {*registries, "micle", "curriculum"}
    assert all((ROOT / spec["config"]).is_file() for spec in study.METHODS.values())
    assert study.METHODS["micle"]["overrides"] == {"ssl_method": "simclr", "multi_instance": True}
    assert all(study.METHODS[m]["overrides"] == {"ssl_method": m} for m in registries)
    assert set(study.DEFAULT_METHODS) <= set(study.METHODS)


def test_steps_run_once_and_are_skipped_when_they_finished(out, capsys):
    steps = study.ResumableSteps(out)
    output = out / "a.txt"
    assert steps("a", step(output), output, redo=False) is True
    assert output.read_text() == "x" and "step ran" in (out / "logs" / "a.log").read_text()
    marker = json.loads((out / "done" / "a.json").read_text())
    assert marker["output"] == str(output) and marker["command"].startswith("python -c ")
    assert steps("a", step(output), output, redo=False) is False  # finished before: skipped
    assert steps.ran == ["a"] and len(steps.commands) == 2
    assert "[skip] a: finished before" in capsys.readouterr().out
    assert steps("a", step(output), output, redo=True) is True  # redo: runs again
    output.unlink()  # an output lost since: the step runs again although its marker is there
    assert steps("a", step(output), output, redo=False) is True and steps.ran == ["a", "a", "a"]


def test_a_step_whose_datalist_changed_after_it_finished_runs_again(out, capsys):
    steps, output = study.ResumableSteps(out), out / "a.txt"
    datalist = study.write_datalist(out / "d.json", {"training": [{"image": "1.png"}]}, "first")
    cmd = step(output) + ["--datalist", str(datalist)]  # the step ignores the extra arguments
    assert steps("a", cmd, output, redo=False) is True
    study.write_datalist(datalist, {"training": [{"image": "1.png"}]}, "first")  # the same content: untouched
    assert steps("a", cmd, output, redo=False) is False
    study.write_datalist(datalist, {"training": [{"image": "2.png"}]}, "first")
    marker = out / "done" / "a.json"
    os.utime(datalist, (marker.stat().st_mtime + 0.01,) * 2)  # later than the marker, whatever the clock's grain
    assert steps("a", cmd, output, redo=False) is True
    assert "[redo] a: its datalist changed after it finished" in capsys.readouterr().out
    assert steps("a", cmd, output, redo=False) is False  # and finished again


def test_a_failed_step_stops_the_study_naming_its_log(out):
    with pytest.raises(SystemExit, match=r"b failed \(exit 3, .*b.txt missing\); log .*b.log:\nstep ran"):
        study.ResumableSteps(out)("b", step(out / "b.txt", status=3), out / "b.txt", redo=False)
    assert not (out / "done" / "b.json").exists()


def test_a_dry_run_prints_the_commands_and_runs_nothing(out, capsys):
    steps = study.ResumableSteps(out, dry_run=True)
    assert steps("c", step(out / "c.txt"), out / "c.txt", redo=False) is True
    assert not (out / "c.txt").exists() and not (out / "logs" / "c.log").exists() and steps.ran == []
    assert f"[run ] c: {steps.commands[0]}" in capsys.readouterr().out


def test_shell_quote_keeps_commands_readable():
    assert study.shell_quote("--seed") == "--seed"
    assert study.shell_quote("['a.json','b.json']") == "\"['a.json','b.json']\""
    assert study.shell_quote("a b$c") == "'a b$c'"


def test_train_and_test_commands(out):
    steps = study.ResumableSteps(out, dry_run=True)
    ids = {"seed": 3, "freeze_encoder": True}
    metrics = study.train_and_test(steps, "t", out / "run", ids, out / "w.pt", redo=True, test_ids={"seed": 4})
    assert metrics == out / "run" / "test" / "metrics.json"
    train, test = steps.commands
    assert "configs/train.json" in train and "--pretrained_ckpt" in train and "--resume False" in train
    assert "--freeze_encoder True" in train and f"--ckpt_dir {out / 'run' / 'models'}" in train
    # the test loads the fine-tuned model.pt: no initial weights, no resume, nothing frozen; its own ids win
    assert "evaluate.json" in test and "--seed 4" in test and "--n_overlays 0" in test
    assert not any(f"--{key} " in test for key in ("pretrained_ckpt", "resume", "freeze_encoder"))
    assert f"--output_dir {out / 'run' / 'test'}" in test


def test_write_datalist_keeps_the_fields_the_runs_read_and_rewrites_only_a_change(tmp_path):
    entries = [{"image": "/a.png", "label": 1, "mask": None, "patient": "p", "extra": 5}]
    path = study.write_datalist(tmp_path / "d.json", {"training": entries}, "why")
    assert json.loads(path.read_text()) == {
        "description": "why",
        "training": [{"image": "/a.png", "label": 1, "patient": "p"}],
    }
    stamp = path.stat().st_mtime_ns
    study.write_datalist(path, {"training": entries}, "why")
    assert path.stat().st_mtime_ns == stamp
    study.write_datalist(path, {"training": entries[:0]}, "why")
    assert json.loads(path.read_text())["training"] == []


def test_the_split_holds_every_labelled_image_once_with_absolute_paths(tmp_path, out):
    write_dataset(tmp_path / "data", n_per_class=4)
    path, splits = study.write_split(tmp_path / "data", out, 0.25, 0.25, split_seed=0)
    assert path == out / "split_datalist.json"
    written = json.loads(path.read_text())
    assert {s: [e["image"] for e in written[s]] for s in splits} == {
        s: [e["image"] for e in v] for s, v in splits.items()
    }
    assert set(splits) == {"training", "validation", "test"} and all(splits.values())
    images = [e["image"] for section in splits.values() for e in section]
    assert len(images) == len(set(images)) == 4 * len(CLASS_NAMES) and all(Path(i).is_absolute() for i in images)
    # patients never straddle two sections
    patients = [{e["patient"] for e in section} for section in splits.values()]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_best_initialisation_for_leave_one_source_out():
    args = argparse.Namespace(loso_init="best", inits=["scratch", "simclr", "natural"], variants=["unguided"])
    cells = {
        f"finetune/{i}/1.0": {"metrics": {"auc_macro": {"mean": m}}} for i, m in (("scratch", 0.6), ("simclr", 0.8))
    }
    assert study._loso_init(args, cells) == "simclr"
    assert study._loso_init(args, {}) == "scratch"  # nothing measured (a dry run): the first
    assert study._loso_init(argparse.Namespace(loso_init="natural", inits=args.inits), cells) == "natural"
    # ranked in the first variant's rows: the lung-guided ones here, where natural is best
    cells["finetune/natural+lung_guided/1.0"] = {"metrics": {"auc_macro": {"mean": 0.7}}}
    guided = argparse.Namespace(loso_init="best", inits=args.inits, variants=["lung_guided", "unguided"])
    assert study._loso_init(guided, cells) == "natural"


def test_a_left_out_source_takes_its_patients_out_of_training(capsys):
    def image(name, source, patient=None):
        return {"image": name, "source": source, **({"patient": patient} if patient else {})}

    splits = {
        "training": [image("a1", "a", "p1"), image("b1", "b", "p1"), image("b2", "b", "p2"), image("b3", "b")],
        "validation": [image("b4", "b", "p1"), image("b5", "b", "p3")],
        "test": [image("a2", "a", "p4"), image("b6", "b")],
    }
    sections = study.loso_sections(splits, "a")
    assert [e["image"] for e in sections["test"]] == ["a1", "a2"]  # every image of the source
    assert [e["image"] for e in sections["training"]] == ["b2", "b3"]  # not b1: p1 is a patient of a
    assert [e["image"] for e in sections["validation"]] == ["b5"]
    assert "leave out a: 2 images of other sources show its patients" in capsys.readouterr().out
    assert [e["image"] for e in study.loso_sections(splits, "b")["training"]] == []  # a1 is p1's, a patient of b


def test_sources_with_enough_images():
    entries = [{"source": "a"}] * 3 + [{"source": "b"}] * 2 + [{}] * 5 + [{"source": None}]
    assert study._loso_sources(entries, 2) == ["a", "b"]
    assert study._loso_sources(entries, 3) == ["a"]  # images without a source are no source


def test_each_training_variant_is_a_row_of_every_initialisation():
    rows = study.arms(["scratch", "simclr"], ["unguided", "lung_guided"])
    assert rows == [
        ("scratch", "scratch", "unguided"),  # unguided keeps the initialisation's name (and earlier folders)
        ("scratch+lung_guided", "scratch", "lung_guided"),
        ("simclr", "simclr", "unguided"),
        ("simclr+lung_guided", "simclr", "lung_guided"),
    ]
    args = argparse.Namespace(w_lung_guidance=0.25)
    # every variant sets lung guidance itself: a row means the same whatever the configs' default
    assert study.variant_ids("lung_guided", args) == {"w_lung_guidance": 0.25}
    assert study.variant_ids("lungs_only", args) == {"lungs_only": True, "w_lung_guidance": 0.0}
    assert study.variant_ids("unguided", args) == {"w_lung_guidance": 0.0}
