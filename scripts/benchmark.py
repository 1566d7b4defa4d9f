"""Benchmarks of the bundle against plain PyTorch, both measured in one process on the same model and batches.

    python scripts/benchmark.py train      [--warmup 2 --iters 5 --image_size 224 --batch_size 16 --num_workers 2]
    python scripts/benchmark.py pretrain   [--method simclr|moco|byol|simsiam --multi_instance]
    python scripts/benchmark.py inpainting [--method inpainting|outpainting|group_masked --batch_size 8]
    python scripts/benchmark.py inference  [--saliency gradcampp|gradcam|occlusion --warmup 1 --iters 6]
    python scripts/benchmark.py all        [--device cpu|cuda --json runs/benchmark.json]

Every suite takes --warmup, --iters, --device (default cuda when available), --threads, --image_size, --batch_size,
--backbone and --json; the workflow suites also --dataset_dir and --num_workers. Runs from any working directory.

train, pretrain and inpainting run the config's MONAI workflow for --warmup + --iters iterations and a plain loop
of the same network or method (before and after the workflow, averaged) and report ``ratio`` = bundle / plain
throughput (higher is better, 1.0 = no overhead). inference reports ``saliency_cost_ratio``: the median batch time
with a saliency map over that of a plain pass (lower is better). All also report peak memory per phase.
"""

from __future__ import annotations

import functools

from bundle.errors import run_main

if __package__:  # imported as scripts.benchmark, or run with python -m scripts.benchmark
    from .bench import main
else:  # python scripts/benchmark.py: sys.path[0] is scripts/
    from bench import main

if __name__ == "__main__":
    run_main(functools.partial(main, description=__doc__))
