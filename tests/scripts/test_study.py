"""scripts/study.py: options checked before the first step; a dry run prints every command; one small real study
on data/sample writes report.md, results.json and the curves, and a rerun skips what finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, write_dataset
from tests.helpers import run_script
from tests.networks.test_published import published_state, to_transformers

SAMPLE = ROOT / "data" / "sample"
# one thread, whatever the machine: the study's steps (a process each) see the same setting everywhere
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """``data/`` with a datalist (its images are never read by a failing run), a file, and a broken datalist."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "datalist.json").write_text(json.dumps({"training": []}))
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "datalist.json").write_text("{not json")
    (tmp_path / "not_weights.pt").write_text("text, not a checkpoint\n")
    return tmp_path


# (arguments after --data data --out out --dry_run, exit status, texts the message must hold)
CASES = {
    "fraction 0": (["--fractions", "0.1", "0"], 2, ["--fractions: 0 must be a number in (0, 1]"]),
    "fraction above 1": (["--fractions", "1.5"], 2, ["--fractions: 1.5 must be a number in (0, 1]"]),
    "fractions sum above 1": (
        ["--val_fraction", "0.5", "--test_fraction", "0.6"],
        2,
        ["--val_fraction 0.5 plus --test_fraction 0.6", "below 1"],
    ),
    "unknown method": (["--methods", "simclr", "simclear"], 2, ["--methods", "simclear", "curriculum"]),
    "unknown protocol": (["--protocols", "probe", "tune"], 2, ["--protocols", "tune"]),
    "no initialisation": (["--methods", "none", "--no_scratch"], 2, ["no initialisation"]),
    "loso init": (["--loso_init", "simclr", "--methods", "none"], 2, ["--loso_init simclr"]),
    "loso without 100 %": (["--leave_one_source_out", "--fractions", "0.1"], 2, ["--leave_one_source_out"]),
    "image size": (["--image_size", "100"], 2, ["--image_size", "multiple of 32"]),
    "epochs 0": (["--finetune_epochs", "0"], 2, ["--finetune_epochs", ">= 1"]),
    "bootstrap 0": (["--bootstrap", "0"], 2, ["--bootstrap", ">= 1"]),
    "negative seed": (["--seeds", "0", "-1"], 2, ["--seeds: -1 must be an integer in [0, 4294967295]"]),
    "no datalist": (["--data", "nope"], 2, ["--data nope", "datalist.json"]),
    "data is a file": (["--data", "a_file"], 2, ["--data a_file", "not a folder"]),
    "natural weights missing": (["--natural_weights", "nope.pt"], 1, ["--natural_weights nope.pt", "no such file"]),
    "natural weights not weights": (["--natural_weights", "not_weights.pt"], 1, ["--natural_weights", "not_weights"]),
    "init file missing": (["--init_file", "rad=nope.pt"], 1, ["--init_file rad=nope.pt", "no such file"]),
    "init file not NAME=PATH": (["--init_file", "nope.pt"], 2, ["--init_file", "NAME=PATH"]),
    "init file name taken": (["--init_file", "scratch=nope.pt"], 2, ["--init_file", "must differ"]),
    "out is a file": (["--out", "a_file"], 1, ["--out", "a_file is a file"]),
    "datalist not JSON": (["--data", "broken"], 1, ["broken/datalist.json", "JSON"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_option_stops_before_any_step(case, folders, capsys, monkeypatch):
    """In-process (one interpreter for every case): argparse exits with status 2, ``fail`` with its message."""
    from scripts.study import main

    args, status, named = CASES[case]
    monkeypatch.chdir(folders)
    with pytest.raises(SystemExit) as stop:
        main(["--data", "data", "--out", "out", "--dry_run", "--methods", "none", *args])
    captured = capsys.readouterr()
    output = captured.out + captured.err + ("" if isinstance(stop.value.code, int) else str(stop.value))
    assert (stop.value.code if isinstance(stop.value.code, int) else 1) == status, output
    for text in named:
        assert text in output, (text, output)
    assert not (folders / "out" / "split_datalist.json").exists() and "[run ]" not in output


def test_dry_run_prints_every_command_of_the_grid_and_the_source_runs(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=4)
    args = ["--data", "data", "--out", "study", "--dry_run", "--methods", "simclr", "curriculum", "--seeds", "0", "1"]
    args += ["--fractions", "0.5", "1", "--image_size", "32", "--leave_one_source_out"]
    proc = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    split = json.loads((tmp_path / "study" / "split_datalist.json").read_text())
    assert {"training", "validation", "test"} <= set(split) and split["test"]
    commands = json.loads((tmp_path / "study" / "results.json").read_text())["commands"]
    # 2 pretrainings, then 2 protocols x 3 initialisations x 2 fractions x 2 seeds x (train + test); the synthetic
    # datalist has no source field, so no leave-one-source-out run
    assert len(commands) == 2 + 2 * 3 * 2 * 2 * 2
    assert "pretrain_curriculum.json" in commands[1] and "--image_size 32" in commands[0]
    probes = [c for c in commands if "--freeze_encoder True" in c]
    assert len(probes) == 3 * 2 * 2 and all("/runs/probe/" in c for c in probes)
    assert sum("--label_fraction 0.5 " in c for c in commands) == 2 * 3 * 2 * 2
    # without --variants every run trains as the configs do, unguided, in the initialisation's own folders
    runs = [c for c in commands if "/runs/" in c]
    assert all("--w_lung_guidance 0.0" in c and "+lung_guided" not in c for c in runs)
    assert all(line in proc.stdout for line in commands)


def test_dry_run_of_training_variants_sets_their_ids(tmp_path):
    write_dataset(tmp_path / "data", n_per_class=4)
    args = ["--data", "data", "--out", "study", "--dry_run", "--methods", "none", "--protocols", "finetune"]
    args += ["--fractions", "1", "--variants", "unguided", "lungs_only", "lung_guided", "--w_lung_guidance", "0.5"]
    proc = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    commands = json.loads((tmp_path / "study" / "results.json").read_text())["commands"]
    trains = [c for c in commands if "--max_epochs" in c and "evaluate.json" not in c]
    assert len(commands) == 3 * 2 and len(trains) == 3
    unguided, lungs_only, guided = trains
    assert "/runs/finetune/scratch/frac1/" in unguided and "--lungs_only" not in unguided
    assert "--w_lung_guidance 0.0" in unguided and "--w_lung_guidance 0.0" in lungs_only
    assert "/runs/finetune/scratch+lungs_only/frac1/" in lungs_only and "--lungs_only True" in lungs_only
    assert "/runs/finetune/scratch+lung_guided/frac1/" in guided and "--w_lung_guidance 0.5" in guided


def _natural_weights(path: Path) -> Path:
    """Encoder weights as scripts/convert_weights.py writes them (``encoder.*`` keys): another seed than the
    scratch runs', and batch-norm statistics away from a fresh network's zeros and ones."""
    from bundle.networks import MultiTaskNet

    torch.manual_seed(123)
    state = {k: v for k, v in MultiTaskNet(4, backbone="resnet10").state_dict().items() if k.startswith("encoder.")}
    for k, v in state.items():
        if k.endswith(("running_mean", "running_var")):
            state[k] = torch.rand_like(v) + 0.5
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_small_study_writes_the_report_and_a_rerun_skips_what_finished(tmp_path):
    if not (SAMPLE / "datalist.json").is_file():
        pytest.skip(f"{SAMPLE} (the embedded sample data) is missing")
    # the natural-image initialisation only (the grid of initialisations is the dry run's): 2 protocols x 2 steps
    args = ["--data", str(SAMPLE), "--out", "study", "--methods", "none", "--no_scratch", "--seeds", "0"]
    args += ["--fractions", "0.5", "--natural_weights", str(_natural_weights(tmp_path / "natural.pt"))]
    args += ["--image_size", "32", "--variants", "unguided"]  # its rows keep the initialisation's name
    args += ["--finetune_epochs", "1", "--batch_size", "16", "--num_workers", "0", "--bootstrap", "50"]
    proc = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = tmp_path / "study"
    results = json.loads((out / "results.json").read_text())
    assert len(results["ran"]) == 2 * 2  # protocols x (train + test), one initialisation and fraction
    assert set(results["cells"]) == {"finetune/natural/0.5", "probe/natural/0.5"}
    for cell in results["cells"].values():
        auc = cell["metrics"]["auc_macro"]
        assert 0 <= auc["mean"] <= 1 and auc["std"] is None  # one seed
        assert auc["interval"] is None or auc["interval"][0] <= auc["interval"][1]
        assert "lung_attention_ratio" in cell["metrics"]
    report = (out / "report.md").read_text()
    assert "| probe | natural | 0.5 |" in report and "python -m monai.bundle run" in report
    for png in ("finetune_auc_macro", "probe_auc_macro", "finetune_lung_attention_ratio"):
        assert (out / "curves" / f"{png}.png").stat().st_size > 1000
        assert f"curves/{png}.png" in report
    # the probe's encoder did not train: its BN statistics equal the natural weights' in the fine-tuned model
    natural = torch.load(tmp_path / "natural.pt")
    probe = torch.load(out / "runs/probe/natural/frac0.5/seed0/models/model.pt")
    tuned = torch.load(out / "runs/finetune/natural/frac0.5/seed0/models/model.pt")
    assert all(torch.equal(probe[k], v) for k, v in natural.items() if v.is_floating_point())
    stats = [k for k in natural if k.endswith("running_mean")]
    assert not any(torch.equal(tuned[k], natural[k]) for k in stats)
    # and the natural run is not a scratch run: its test metrics differ from the fine-tuned model's, and its
    # encoder is not the one a fresh network of the same seed starts from
    probe_metrics = json.loads((out / "runs/probe/natural/frac0.5/seed0/test/metrics.json").read_text())
    assert probe_metrics != json.loads((out / "runs/finetune/natural/frac0.5/seed0/test/metrics.json").read_text())
    from bundle.networks import MultiTaskNet

    torch.manual_seed(0)
    fresh = MultiTaskNet(4, backbone="resnet10").state_dict()
    assert not all(torch.equal(probe[k], fresh[k]) for k in natural if k in fresh and fresh[k].is_floating_point())

    # an interruption lost one test run's output: the rerun redoes that step only
    (out / "runs/probe/natural/frac0.5/seed0/test/metrics.json").unlink()
    again = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=1500)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("[run ]") == 1 and "[run ] test_probe_natural_frac0.5_seed0" in again.stdout
    assert again.stdout.count("[skip]") == 2 * 2 - 1


def test_leave_one_source_out_writes_a_datalist_per_source_without_it_in_training(tmp_path):
    if not (SAMPLE / "datalist.json").is_file():
        pytest.skip(f"{SAMPLE} (the embedded sample data) is missing")
    args = ["--data", str(SAMPLE), "--out", "study", "--dry_run", "--methods", "none", "--protocols", "finetune"]
    args += ["--fractions", "1", "--leave_one_source_out", "--loso_min_images", "10"]
    proc = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    entries = json.loads((SAMPLE / "datalist.json").read_text())["training"]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["source"]] = counts.get(e["source"], 0) + 1
    expected = sorted(s for s, n in counts.items() if n >= 10)
    files = sorted((tmp_path / "study" / "loso").glob("datalist_*.json"))
    assert expected and len(files) == len(expected)
    for path in files:
        datalist = json.loads(path.read_text())
        held_out = {e["source"] for e in datalist["test"]}
        assert len(held_out) == 1 and len(datalist["test"]) == counts[held_out.pop()]
        assert not {e["source"] for e in datalist["training"] + datalist["validation"]} & {
            datalist["test"][0]["source"]
        }
        assert datalist["training"] and datalist["validation"]
    assert proc.stdout.count("[run ] train_loso_") == len(expected)


def _converted_dinov2(folder: Path) -> Path:
    """A DINOv2 ViT-S/14 in RAD-DINO's published layout (transformers names, .safetensors), random weights at a
    trainable scale, converted by scripts/convert_weights.py: a vit_s16 encoder whose recipe requires vit_pool token."""
    from safetensors.torch import save_file

    from bundle.networks.vit import VIT_BACKBONES
    from scripts.convert_weights import main as convert_main

    source, converted = folder / "model.safetensors", folder / "rad_dino_s.pt"
    save_file(to_transformers(published_state(VIT_BACKBONES["vit_s16"], dinov2=True)), str(source))
    convert_main(["--input", str(source), "--output", str(converted)])
    return converted


def test_init_file_of_another_backbone_names_the_option_to_pass(tmp_path, capsys, monkeypatch):
    from scripts.study import main

    write_dataset(tmp_path / "data", n_per_class=2)
    converted = _converted_dinov2(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["--data", "data", "--out", "out", "--dry_run", "--methods", "none", "--init_file", f"rad={converted}"])
    assert "is a vit_s16 encoder" in str(stop.value) and "pass --backbone vit_s16" in str(stop.value)
    assert not (tmp_path / "out").exists()


def test_dry_run_gives_the_init_file_runs_its_weights(tmp_path, capsys, monkeypatch):
    from scripts.study import main

    write_dataset(tmp_path / "data", n_per_class=4)
    converted = _converted_dinov2(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["--data", "data", "--out", "study", "--dry_run", "--methods", "none", "--backbone", "vit_s16"]
    main(args + ["--init_file", f"rad_dino={converted.name}", "--fractions", "1"])
    commands = json.loads((tmp_path / "study" / "results.json").read_text())["commands"]
    assert len(commands) == 2 * 2 * 2  # protocols x (scratch, rad_dino) x (train + test)
    ours = [c for c in commands if "/runs/finetune/rad_dino/" in c or "/runs/probe/rad_dino/" in c]
    trains = [c for c in ours if "configs/train.json --" in c and "evaluate.json" not in c]
    assert len(ours) == 4 and len(trains) == 2
    assert all(f"--pretrained_ckpt {converted}" in c and "--backbone vit_s16" in c for c in trains)
    assert not any("--pretrained_ckpt" in c for c in commands if c not in trains)


@pytest.mark.slow
def test_study_runs_from_a_converted_published_encoder(tmp_path):
    """One fine-tuning and its test from a converted DINOv2 file: the runs use the recipe's vit_pool token."""
    if not (SAMPLE / "datalist.json").is_file():
        pytest.skip(f"{SAMPLE} (the embedded sample data) is missing")
    converted = _converted_dinov2(tmp_path)
    args = ["--data", str(SAMPLE), "--out", "study", "--methods", "none", "--no_scratch", "--seeds", "0"]
    args += ["--fractions", "0.5", "--protocols", "finetune", "--init_file", f"rad_dino={converted}"]
    args += ["--backbone", "vit_s16", "--image_size", "32", "--finetune_epochs", "1", "--batch_size", "16"]
    args += ["--num_workers", "0", "--bootstrap", "20"]
    proc = run_script("study.py", *args, cwd=tmp_path, env=ONE_THREAD, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = tmp_path / "study"
    results = json.loads((out / "results.json").read_text())
    assert set(results["cells"]) == {"finetune/rad_dino/0.5"} and len(results["ran"]) == 2
    auc = results["cells"]["finetune/rad_dino/0.5"]["metrics"]["auc_macro"]
    assert 0 <= auc["mean"] <= 1
    run = out / "runs/finetune/rad_dino/frac0.5/seed0"
    assert json.loads((run / "models/model.recipe.json").read_text())["vit_pool"] == "token"
    log = (out / "logs/train_finetune_rad_dino_frac0.5_seed0.log").read_text()
    assert "encoder 150/150" in log
    tuned = torch.load(run / "models/model.pt")
    start = torch.load(converted)
    assert "encoder.vit.cls_token" in tuned and not torch.equal(
        tuned["encoder.vit.cls_token"], start["encoder.vit.cls_token"]
    )
