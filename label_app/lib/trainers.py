"""MONAI Label train task: fine-tune the lung segmentation from the masks annotators saved in the datastore.

Only the segmentation decoder and head learn; the encoder and the class head stay as they are (frozen, and the
encoder's batch-norm statistics too), so the classification a study gets does not change when annotators
correct lung masks. The best weights by validation Dice (on held-out annotated studies) are published
atomically to ``<app_dir>/model/model.pt``, where both infer tasks pick them up on their next call.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pydicom
import torch
from ignite.engine import Events
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.transforms import Activationsd, AsDiscreted, EnsureTyped, Resized, SelectItemsd
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.tasks.train.basic_train import BasicTrainTask, Context
from PIL import Image
from torch import nn

from bundle.checkpoints import load_weights, read_recipe, save_weights
from bundle.data.datalist import check_entries
from bundle.data.transforms import LoadCXRd
from bundle.inference.dicom_seg import read_lung_seg

from .bundle_config import inference_config, weights_paths

__all__ = ["DecoderOnly", "LungSegmentationTrain", "annotated_pairs", "seg_as_mask"]

logger = logging.getLogger(__name__)


class DecoderOnly(nn.Module):
    """A bundle segmentation network whose encoder and class head stay frozen in eval mode while it trains.

    ``train()`` would put the encoder's batch norms back in training mode (MONAI's trainer calls it every
    iteration), which changes their running statistics and with them the classification: this keeps them out.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        for module in (network.encoder, network.classifier):
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> "DecoderOnly":
        super().train(mode)
        self.network.encoder.eval()
        self.network.classifier.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images to (B, 2, H, W) lung segmentation logits."""
        return self.network(x)


def seg_as_mask(label: str, image: str) -> str:
    """A final label that is a DICOM SEG (the labels of a DICOMweb archive) as a 0/1 PNG mask beside it, which
    the bundle's transforms read; any other label as it is. A SEG of another image than ``image`` is refused."""
    if not label.lower().endswith(".dcm"):
        return label
    seg = pydicom.dcmread(label)
    if seg.get("Modality") != "SEG":
        return label  # a mask stored as a DICOM image
    mask, referenced = read_lung_seg(seg)
    source_uid = pydicom.dcmread(image, stop_before_pixels=True).SOPInstanceUID
    if referenced != source_uid:
        raise ValueError(f"SEG {os.path.basename(label)} segments image {referenced}, not {source_uid}")
    png = os.path.splitext(label)[0] + "_mask.png"
    Image.fromarray(mask).save(png)
    return png


def annotated_pairs(datalist: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The datastore's (image, final label) pairs the bundle can read, with a warning naming each one left out.

    A SEG label is read as its mask (``seg_as_mask``); then the bundle's own datalist check decides: both files
    decode and the mask has the image's shape.
    """
    pairs = []
    for entry in datalist:
        image, label = entry.get("image"), entry.get("label")
        name = os.path.basename(str(image))
        try:
            label = seg_as_mask(str(label), str(image))
        except Exception as e:  # pydicom and highdicom raise several types for a file they cannot parse
            logger.warning("annotation of %s left out: %s", name, e)
            continue
        problems = check_entries([{"_id": name, "image": image, "mask": label}], 1, require_label=False, num_threads=1)
        if problems:
            logger.warning("annotation of %s left out: %s", name, problems[0])
            continue
        pairs.append({"image": image, "label": label})
    return pairs


class LungSegmentationTrain(BasicTrainTask):
    """Fine-tunes the lung segmentation on the datastore's final labels, from the weights the infer tasks use
    (``overrides``: config ids of the served network, ``network_overrides``)."""

    def __init__(self, bundle_root: str, app_dir: str, overrides: dict[str, Any] | None = None) -> None:
        self.bundle_config = inference_config(bundle_root, **(overrides or {}))
        self.image_size = int(self.bundle_config.get_parsed_content("image_size"))
        self.weights = weights_paths(self.bundle_config, app_dir)
        super().__init__(
            model_dir=os.path.join(app_dir, "model", "lung_segmentation"),
            description="Fine-tune the lung segmentation (decoder) from annotated masks",
            # the key metrics are MONAI Label's own: MeanDice of the lung channel (train_mean_dice, val_mean_dice)
            config={
                "max_epochs": 10,
                "learning_rate": 1e-4,
                "train_batch_size": 4,
                "val_split": 0.2,
                "tracking": ["None", "mlflow"],
            },
            amp=torch.cuda.is_available(),
            labels={"lung": 1},
        )

    def current_weights(self) -> str:
        """The weights the infer tasks load now: the last published ones, else the shipped ones."""
        return next(p for p in reversed(self.weights) if os.path.exists(p))

    def network(self, context: Context) -> nn.Module:
        network = self.bundle_config.get_parsed_content("network_def_seg")
        network.load_state_dict(load_weights(self.current_weights()), strict=True)
        logger.info("fine-tuning from %s", self.current_weights())
        return DecoderOnly(network)

    def load_path(self, output_dir: str, pretrained: bool = True) -> None:
        return None  # network() has loaded the current weights

    def optimizer(self, context: Context) -> torch.optim.Optimizer:
        params = [p for p in context.network.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=float(context.request.get("learning_rate", 1e-4)))

    def loss_function(self, context: Context) -> nn.Module:
        return DiceCELoss(to_onehot_y=True, softmax=True)  # the segmentation term of the bundle's MultiTaskLoss

    def train_pre_transforms(self, context: Context) -> list:
        size = [self.image_size, self.image_size]
        return [
            LoadCXRd(mask_key="label"),  # (1, rows, cols) image in [0, 1] and 0/1 mask, as the bundle reads them
            Resized(keys=["image", "label"], spatial_size=size, mode=["area", "nearest"]),
            SelectItemsd(keys=["image", "label"]),
            EnsureTyped(keys=["image", "label"], track_meta=False),
        ]

    def train_post_transforms(self, context: Context) -> list:
        # validation uses the same pre- and post-transforms (BasicTrainTask's default)
        return [
            Activationsd(keys="pred", softmax=True),
            AsDiscreted(keys=("pred", "label"), argmax=(True, False), to_onehot=(2, 2)),
        ]

    def val_inferer(self, context: Context) -> SimpleInferer:
        return SimpleInferer()

    def pre_process(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, str]]:
        pairs = annotated_pairs(datastore.datalist())
        if not pairs:
            raise MONAILabelException(
                MONAILabelError.INVALID_INPUT, "no annotated study to train on: save lung masks as final labels first"
            )
        return pairs

    def finalize(self, context: Context) -> None:
        super().finalize(context)
        publish = self._publish_best if context.evaluator else self._publish_last
        engine = context.evaluator or context.trainer
        engine.add_event_handler(Events.EPOCH_COMPLETED, publish, context)

    def _save(self, context: Context) -> None:
        network = context.network.network  # the bundle network inside DecoderOnly: the shipped state_dict keys
        state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
        # the network's settings are those of the weights it started from: their recipe goes with the new ones
        save_weights(state, self.weights[-1], read_recipe(self.current_weights()))
        logger.info("published new weights to %s", self.weights[-1])

    def _publish_best(self, evaluator, context: Context) -> None:
        if evaluator.state.best_metric_epoch == context.trainer.state.epoch:
            self._save(context)

    def _publish_last(self, trainer, context: Context) -> None:
        if trainer.state.epoch == trainer.state.max_epochs:
            self._save(context)
