#!/usr/bin/env bash
# The main job on the embedded sample (data/sample): self-supervised pretraining, multi-task fine-tuning from
# it, evaluation on the held-out patients, and inference with saliency on a few images. About 5 minutes on an idle
# 2-core machine; QUICK=1 runs 1 + 3 epochs instead of 4 + 12 (about 2 minutes: a first look, not a useful model).
# Everything goes to $DEMO_DIR (runs/demo): the shipped weights in models/ are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_DIR:-runs/demo}
SIZE=${DEMO_IMAGE_SIZE:-128}
if [ "${QUICK:-0}" = 1 ]; then PRETRAIN_EPOCHS=1 TRAIN_EPOCHS=3; else PRETRAIN_EPOCHS=4 TRAIN_EPOCHS=12; fi
START=$SECONDS
rm -rf "$OUT"
run() { echo; echo "\$ python -m monai.bundle run $*"; "$PY" -m monai.bundle run "$@"; }

echo "== 1/4 SimCLR pretraining on the sample images (labels unused)"
run --config_file configs/pretrain_contrastive.json --ssl_method simclr --image_size "$SIZE" \
    --max_epochs "$PRETRAIN_EPOCHS" --ckpt_dir "$OUT/pretrain" --probe_interval 2

echo "== 2/4 multi-task fine-tuning (classification + lung segmentation) from the pretrained encoder"
run --config_file configs/train.json --image_size "$SIZE" --max_epochs "$TRAIN_EPOCHS" --resume False \
    --pretrained_ckpt "$OUT/pretrain/pretrained_simclr.pt" --ckpt_dir "$OUT/model"

echo "== 3/4 evaluation of the demo model ($OUT/model/model.pt) on the test patients"
run --config_file "['configs/train.json','configs/evaluate.json']" --ckpt_dir "$OUT/model"

echo "== 4/4 inference with Grad-CAM++ on a few sample images"
mkdir -p "$OUT/examples"
for f in $("$PY" -c "import json; d=json.load(open('data/sample/datalist.json'))['training']; \
print(' '.join(next(e['image'] for e in d if e['label'] == c) for c in range(4)))"); do cp "data/sample/$f" "$OUT/examples/"; done
run --config_file configs/inference.json --ckpt_dir "$OUT/model" --dataset_dir "$OUT/examples"

echo
echo "Done in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s. Everything is in $OUT/model (the shipped models/model.pt is left as it is):"
echo "  model.pt               the fine-tuned weights (model.recipe.json: the settings they were made with)"
echo "  training/              training_curves.png, training_log.csv, TensorBoard logs"
echo "  evaluation/            metrics.json and metrics.csv with 95% intervals, roc.png, confusion_matrix.png, overlays/"
echo "  inference/             predictions.csv, lung masks, saliency maps, overlays/"
echo "Pretrained encoder: $OUT/pretrain/pretrained_simclr.pt; TensorBoard: tensorboard --logdir $OUT"
