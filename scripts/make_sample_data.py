"""Rebuild data/sample/ from the cxr-real collection: only images (and masks) whose licence allows redistribution.

    python scripts/make_sample_data.py --src <your data> --out data/sample --per-class 40
    python scripts/make_sample_data.py --src <your data> --out runs/release/data --all


Kept: Kermany et al. images (CC BY 4.0) for normal / bacterial / viral pneumonia, Hannover Medical School
COVID-19 images (CC BY 3.0) with v7labs lung masks (CC BY 4.0). Viral-pneumonia masks of the COVID-19
Radiography Database are left out: their licence is not stated. Whole patients are taken, seeded. With
``--all`` every patient of those sources is kept (COVID-19 images without a mask too): the training set of the
shipped weights (scripts/train_release_model.py).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path

from bundle.atomic import atomic_write, make_folder, write_failed

# (class label, source repository, whether its masks may be redistributed)
ALLOWED = {
    0: ("waliatushar/ai-pneumonia-detection", False),
    1: ("waliatushar/ai-pneumonia-detection", False),
    2: ("ayazmhmd/Unet-Projects", False),
    3: ("ml-workgroup/covid-19-image-repository", True),
}
KEEP_FIELDS = ("image", "mask", "label", "label_name", "patient", "source", "source_path", "source_commit", "license")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default="../shared/data/cxr-real")
    parser.add_argument("--out", default="data/sample")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all", action="store_true", help="every patient of the allowed sources, with or without mask")
    args = parser.parse_args()
    src, out = Path(args.src), Path(args.out)
    entries = json.loads((src / "datalist.json").read_text())["training"]
    rng = random.Random(args.seed)
    chosen = []
    for label, (source, masks_ok) in ALLOWED.items():
        patients = defaultdict(list)
        for e in entries:
            if e["label"] == label and e["source"] == source and (args.all or not masks_ok or e.get("mask")):
                patients[e["patient"]].append(e)
        keys = sorted(patients)
        rng.shuffle(keys)
        taken = []
        for k in keys:
            if not args.all and len(taken) >= args.per_class:
                break
            taken.extend(patients[k])
        for e in taken:
            e = {k: e[k] for k in KEEP_FIELDS if e.get(k) is not None}
            if not masks_ok:
                e.pop("mask", None)
            chosen.append(e)
    make_folder(out / "images", "the images folder")
    make_folder(out / "masks", "the masks folder")
    for e in chosen:
        for key in ("image", "mask"):
            if key in e:
                try:
                    shutil.copyfile(src / e[key], out / e[key])
                except OSError as error:
                    if error.filename == str(src / e[key]):  # a source that cannot be read: not a failed write
                        raise
                    write_failed(out / e[key], error, "the sample file", "the files copied before are kept")
    datalist = {
        "name": "chest_xray_ssl_multitask sample",
        "description": "Real frontal CXRs under CC BY licences (see docs/data_license.txt); 256x256 8-bit PNG.",
        "labels": {"0": "normal", "1": "bacterial_pneumonia", "2": "viral_pneumonia", "3": "covid19"},
        "numTraining": len(chosen),
        "training": chosen,
    }
    # the layout of .ci/format_json.py (the model zoo's pretty-format-json), so `make lint` passes on a regenerated sample
    with atomic_write(out / "datalist.json", "w", encoding="UTF-8") as f:
        f.write(json.dumps(datalist, indent=4) + "\n")
    n_masks, n_patients = sum("mask" in e for e in chosen), len({e["patient"] for e in chosen})
    print(f"{len(chosen)} images, {n_masks} masks, {n_patients} patients")


if __name__ == "__main__":
    main()
