"""Unit tests of the chest_xray_ssl_multitask bundle for the MONAI model zoo's CI (``ci/unit_tests/``).

Run from a model-zoo root, with the bundle at ``models/chest_xray_ssl_multitask``:

    python ci/unit_tests/runner.py -b chest_xray_ssl_multitask

Train (1 epoch), evaluate (train.json + evaluate.json, on the weights the train test wrote) and infer (the shipped
weights) each run through ``ConfigWorkflow`` and ``check_workflow(..., check_properties=True)`` on a tiny
synthetic dataset (24 PNGs, 4 classes, some lung masks). Nothing is written into the bundle folder.
"""

import csv
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
from monai.bundle import ConfigWorkflow
from PIL import Image
from utils import check_workflow

BUNDLE_ROOT = "models/chest_xray_ssl_multitask"
NUM_CLASSES = 4
IMAGES_PER_CLASS = 6
SIZE = 48

TRAIN_OVERRIDE = {
    "bundle_root": BUNDLE_ROOT,
    # train.json's train#trainer#max_epochs (and the lr scheduler's T_max) reference @max_epochs
    "max_epochs": 1,
    "image_size": 32,
    "num_workers": 0,
    "batch_size": 4,
    "resume": False,
}

# the shipped weights run at their own image size (224 px, from models/model.recipe.json): another one is refused
INFER_OVERRIDE = {"bundle_root": BUNDLE_ROOT, "num_workers": 0, "batch_size": 4}


def test_order(test_name1, test_name2):
    def get_order(name):
        if "train" in name:
            return 1
        if "eval" in name:
            return 2
        if "infer" in name:
            return 3
        return 4

    return get_order(test_name1) - get_order(test_name2)


def synthetic_cxr(rng, label):
    """A radiograph-like uint8 image (bright body, two dark lungs, class-dependent texture) and its lung mask."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for cx in (0.3 * SIZE, 0.7 * SIZE):
        mask[((xx - cx) / (0.16 * SIZE)) ** 2 + ((yy - 0.5 * SIZE) / (0.33 * SIZE)) ** 2 < 1] = 1
    image = 200 - 110 * mask + 25 * label * mask * (rng.random((SIZE, SIZE)) > 0.7) + rng.normal(0, 6, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_dataset(dataset_dir):
    """PNGs in images/ (masks/ for every other one) and a datalist.json with paths relative to dataset_dir."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(dataset_dir, "images"))
    os.makedirs(os.path.join(dataset_dir, "masks"))
    entries = []
    for label in range(NUM_CLASSES):
        for i in range(IMAGES_PER_CLASS):
            image, mask = synthetic_cxr(rng, label)
            name = f"c{label}_{i}.png"
            Image.fromarray(image).save(os.path.join(dataset_dir, "images", name))
            entry = {"image": f"images/{name}", "label": label, "patient": f"p{label}_{i}"}
            if i % 2 == 0:
                Image.fromarray(mask * 255).save(os.path.join(dataset_dir, "masks", name))
                entry["mask"] = f"masks/{name}"
            entries.append(entry)
    with open(os.path.join(dataset_dir, "datalist.json"), "w") as f:
        json.dump({"training": entries}, f)


def bundle_file(name):
    return os.path.join(BUNDLE_ROOT, "configs", name)


def workflow(workflow_type, config_file, override):
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=config_file,
        logging_file=bundle_file("logging.conf"),
        meta_file=bundle_file("metadata.json"),
        **override,
    )


class TestChestXraySSLMultitask(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # the configs `$import bundle`, the bundle's own package: import it from the bundle root, as
        # ci/verify_bundle.py does (ConfigWorkflow adds the bundle root to sys.path only in run())
        if BUNDLE_ROOT not in sys.path:
            sys.path = [BUNDLE_ROOT] + sys.path
        # the train test's weights, kept for the eval test (each test gets a fresh dataset_dir)
        cls.train_dir = tempfile.mkdtemp()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.train_dir)

    def setUp(self):
        self.dataset_dir = tempfile.mkdtemp()
        write_dataset(self.dataset_dir)
        self.output_dir = os.path.join(self.dataset_dir, "output")

    def tearDown(self):
        shutil.rmtree(self.dataset_dir)

    def test_train_config(self):
        override = dict(TRAIN_OVERRIDE, dataset_dir=self.dataset_dir, ckpt_dir=self.train_dir)
        override["output_dir"] = self.output_dir
        check_workflow(workflow("train", bundle_file("train.json"), override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.train_dir, "model.pt")))

    def test_eval_config(self):
        if not os.path.isfile(os.path.join(self.train_dir, "model.pt")):
            self.skipTest("needs the weights of test_train_config (run the tests in test_order)")
        override = dict(TRAIN_OVERRIDE, dataset_dir=self.dataset_dir, ckpt_dir=self.train_dir)
        override["output_dir"] = self.output_dir
        # evaluate.json overrides train.json, thus the workflow type is "train" rather than "eval"
        config_file = [bundle_file("train.json"), bundle_file("evaluate.json")]
        check_workflow(workflow("train", config_file, override), check_properties=True)
        self.assertTrue(os.path.isfile(os.path.join(self.output_dir, "metrics.csv")))

    def test_infer_config(self):
        images = os.path.join(self.dataset_dir, "images")
        override = dict(INFER_OVERRIDE, dataset_dir=images, output_dir=self.output_dir)
        check_workflow(workflow("infer", bundle_file("inference.json"), override), check_properties=True)
        with open(os.path.join(self.output_dir, "predictions.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), NUM_CLASSES * IMAGES_PER_CLASS)
        self.assertTrue(all(r["status"] == "ok" for r in rows))


if __name__ == "__main__":
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    unittest.main(testLoader=loader)
