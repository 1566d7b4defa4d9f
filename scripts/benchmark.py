"""Benchmarks of the bundle's workflows against plain PyTorch loops of the same model, measured in one run.

    python scripts/benchmark.py train [--image_size 224 --batch_size 16 ...]
    python scripts/benchmark.py pretrain --method simclr
    python scripts/benchmark.py inpainting
    python scripts/benchmark.py inference
    python scripts/benchmark.py all --json runs/benchmark.json

Each suite prints both throughputs, their ratio (bundle / plain; 1.0 = no overhead) and peak memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUITES = {
    "train": "scripts.bench_train",
    "pretrain": "scripts.bench_pretrain",
    "inpainting": "scripts.bench_inpainting",
    "inference": "scripts.bench_inference",
}


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, run the chosen suite(s), print and optionally save the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    modules = {name: importlib.import_module(path) for name, path in SUITES.items() if _exists(path)}
    for name, module in modules.items():
        module.add_arguments(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    sub.add_parser("all", help="every suite with its defaults")
    for p in sub.choices.values():
        if "--json" not in p._option_string_actions:  # a suite may define its own
            p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # configs refer to each other relative to the bundle root
    if args.suite == "all":
        results = {}
        for name, module in modules.items():
            sub_parser = argparse.ArgumentParser()
            module.add_arguments(sub_parser)
            results[name] = module.run(sub_parser.parse_args([]))
    else:
        results = {args.suite: modules[args.suite].run(args)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


def _exists(module_path: str) -> bool:
    return (ROOT / (module_path.replace(".", "/") + ".py")).is_file()


if __name__ == "__main__":
    main()
