#!/usr/bin/env bash
# The main job on the embedded sample (data/sample): self-supervised pretraining, multi-task fine-tuning from
# it, evaluation on the held-out patients, and inference with saliency on a few images. A few minutes on 2 CPU cores.
# Everything goes to $DEMO_DIR (runs/demo): the shipped weights in models/ are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_DIR:-runs/demo}
SIZE=${DEMO_IMAGE_SIZE:-128}
rm -rf "$OUT"
run() { echo; echo "\$ python -m monai.bundle run $*"; "$PY" -m monai.bundle run "$@"; }

echo "== 1/4 SimCLR pretraining on the sample images (labels unused)"
run --config_file configs/pretrain_contrastive.json --ssl_method simclr --image_size "$SIZE" --max_epochs 4 \
    --ckpt_dir "$OUT/pretrain" --output_dir "$OUT/pretrain" --probe_interval 2

echo "== 2/4 multi-task fine-tuning (classification + lung segmentation) from the pretrained encoder"
run --config_file configs/train.json --image_size "$SIZE" --max_epochs 12 --resume False \
    --pretrained_ckpt "$OUT/pretrain/pretrained_simclr.pt" --ckpt_dir "$OUT/train" --output_dir "$OUT/train"

echo "== 3/4 evaluation of the demo model ($OUT/train/model.pt) on the test patients"
run --config_file "['configs/train.json','configs/evaluate.json']" --image_size "$SIZE" --ckpt_dir "$OUT/train" \
    --output_dir "$OUT/eval"

echo "== 4/4 inference with Grad-CAM++ on a few sample images"
mkdir -p "$OUT/examples"
for f in $("$PY" -c "import json; d=json.load(open('data/sample/datalist.json'))['training']; \
print(' '.join(next(e['image'] for e in d if e['label'] == c) for c in range(4)))"); do cp "data/sample/$f" "$OUT/examples/"; done
run --config_file configs/inference.json --image_size "$SIZE" --ckpt_dir "$OUT/train" --dataset_dir "$OUT/examples" \
    --output_dir "$OUT/inference"

echo
echo "Done. Weights: $OUT/train/model.pt (the shipped models/model.pt is left as it is); metrics: $OUT/eval/metrics.json (ROC and confusion matrix PNGs beside it);"
echo "predictions and overlays: $OUT/inference/ ; TensorBoard: tensorboard --logdir $OUT"
