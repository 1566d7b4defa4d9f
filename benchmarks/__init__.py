"""Benchmarks of the bundle against plain PyTorch, both measured in one process on the same model and batches.

    python -m benchmarks train      [--warmup 2 --iters 5 --image_size 224 --batch_size 16 --num_workers 2]
    python -m benchmarks pretrain   [--method simclr|moco|byol|simsiam --multi_instance]
    python -m benchmarks inpainting [--method inpainting|outpainting|group_masked --batch_size 8]
    python -m benchmarks inference  [--saliency gradcampp|gradcam|occlusion --warmup 1 --iters 6]
    python -m benchmarks cache      [--sizes 1000,10000 --cache_dtype uint8,float32]
    python -m benchmarks onnx       [--view classification|segmentation --batch_size 8 --threads 2]
    python -m benchmarks scale      [--entries 100000 --caches memory,disk --dataset_dir DIR --work DIR]
    python -m benchmarks all        [--suites train,pretrain,inpainting --device cpu|cuda --json out.json]
    python -m benchmarks gpu        [--out runs/gpu_check --parts a,b --budget_s 450 --dry]

Run from the repository root (the release does not ship this package). Every suite takes --warmup, --iters,
--device (default cuda when available), --threads, --image_size, --batch_size, --backbone and --json; the workflow
suites also --dataset_dir, --num_workers and the speed flags --channels_last, --compile, --amp_dtype (config ids of
those names, set only when given). ``all`` runs every suite but ``scale``, pretrain once per method (simclr, moco, byol,
simsiam, and simclr --multi_instance for MICLe); a flag given to ``all`` reaches every suite that has it, the
others keep each suite's defaults.

train, pretrain and inpainting measure three parts in one run: the data path alone (the config's train DataLoader
and prepare_batch, views made on the device included, no model) with one worker and with --num_workers; a plain
loop of the same network or method (before and after the workflow, averaged); and the config's MONAI workflow for
--warmup + --iters iterations. They report ``ratio`` = workflow / plain throughput (higher is better, 1.0 = no
overhead). inference reports ``saliency_cost_ratio``: the median batch time with a saliency map over that of a
plain pass (lower is better); onnx ``onnxruntime_speedup``: onnxruntime's images/s over PyTorch's on the CPU (higher
is better). All also report peak memory per phase. ``gpu`` is the GPU check (``make gpu-check``): pretraining,
fine-tuning and inference at 224 px with bf16 and channels_last, with and without torch.compile, the TensorRT
overlay and an NCCL run, within 8 minutes (``--dry``: the same on the CPU, toy sizes).
"""
