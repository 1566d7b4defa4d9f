"""Pretraining throughput: configs/pretrain_contrastive.json's trainer against a plain PyTorch loop of the same method.

    python scripts/benchmark.py pretrain --method simclr [--image_size 224 --batch_size 16 --iters 5]
    python scripts/bench_pretrain.py --method moco --multi_instance

Both run in this process with the same method (built from the config's ``network_def``), batch size, precision,
optimiser and threads. The bundle side is the full workflow (cached images, two augmented views per image,
DataLoader workers, MONAI's SupervisedTrainer and the pretraining handlers); the plain side feeds random
in-memory tensors. Throughput is counted in views/s (two views per image) over ``--iters`` iterations after
``--warmup``. The plain loop runs before and after the workflow and its mean is the reference, which evens out
drift on a shared machine. Peak memory is the process RSS of each phase on CPU (reset between phases where Linux
allows it) and ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scripts.bench_common import peak_memory_mb, report, reset_peak, sync  # noqa: E402

CONFIG = "configs/pretrain_contrastive.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the pretraining benchmark (also used by ``scripts/benchmark.py pretrain``)."""
    parser.add_argument("--method", default="simclr", choices=["simclr", "moco", "byol", "simsiam"])
    parser.add_argument("--multi_instance", action="store_true", help="MICLe pairs (two images of one patient)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2, help="iterations not timed")
    parser.add_argument("--iters", type=int, default=5, help="iterations timed")
    parser.add_argument("--num_workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--dataset_dir", default="data/sample", help="a folder with datalist.json (images reused)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")


def write_datalist(dataset_dir: str, n_images: int, out: str) -> str:
    """A datalist of at least ``n_images`` entries (the dataset's images, repeated), all for pretraining."""
    source = json.loads((Path(dataset_dir) / "datalist.json").read_text())
    entries = [e for s in ("training", "validation", "test") for e in source.get(s, [])]
    if not entries:
        raise SystemExit(f"{dataset_dir}/datalist.json has no entries")
    rows = []
    for k in range((n_images + len(entries) - 1) // len(entries)):
        for e in entries:
            row = {"image": str((Path(dataset_dir) / e["image"]).resolve())}
            if e.get("patient"):
                row["patient"] = f"{e['patient']}#{k}"  # repeats stay separate patients: MICLe pairs keep their meaning
            rows.append(row)
    path = os.path.join(out, "bench_datalist.json")
    Path(path).write_text(json.dumps({"training": rows, "validation": [], "test": []}))
    return path


def overrides(args: argparse.Namespace, device: torch.device, out: str, datalist: str) -> dict:
    """The config ids both sides share."""
    extra = {} if args.num_workers is None else {"num_workers": args.num_workers}
    return {
        "ssl_method": args.method,
        "multi_instance": args.multi_instance,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "backbone": args.backbone,
        "device": device,
        "amp": device.type == "cuda",
        "datalist": datalist,
        "dataset_dir": args.dataset_dir,
        "max_epochs": 1,
        "probe_interval": 0,
        "val_fraction": 0.0,  # every image pretrains; no probe
        "test_fraction": 0.0,
        "resume": False,
        "ckpt_dir": f"{out}/models",
        "output_dir": f"{out}/eval",
        **extra,
    }


class IterationTimer:
    """Ignite handler: time ``iters`` iterations after ``warmup``, then stop the run."""

    def __init__(self, device: torch.device, warmup: int, iters: int) -> None:
        self.device, self.warmup, self.iters = device, warmup, iters
        self.stamps: list[float] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._tick)

    def _tick(self, engine) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())
        if len(self.stamps) >= self.warmup + self.iters:
            engine.terminate()

    def seconds(self) -> float:
        if len(self.stamps) < self.warmup + self.iters:
            raise RuntimeError(f"only {len(self.stamps)} iterations ran; need {self.warmup + self.iters}")
        return self.stamps[self.warmup + self.iters - 1] - self.stamps[max(self.warmup - 1, 0)]


def bundle_workflow(args: argparse.Namespace, device: torch.device, out: str, datalist: str) -> tuple[float, int]:
    """Views/s of the pretraining workflow; also returns its DataLoader workers."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=CONFIG, workflow_type="train", logging_file=False,
                        **overrides(args, device, out, datalist))
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    timer = IterationTimer(device, args.warmup, args.iters)
    timer.attach(trainer)
    wf.run()
    wf.finalize()
    timed = args.iters if args.warmup else args.iters - 1
    return 2 * args.batch_size * timed / timer.seconds(), int(wf.parser["num_workers"])


def plain_loop(args: argparse.Namespace, device: torch.device, out: str, datalist: str) -> float:
    """Views/s of a hand-written loop on in-memory tensors: same method, optimiser, batch and precision."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIG)
    parser.update(overrides(args, device, out, datalist))
    torch.manual_seed(0)
    method = parser.get_parsed_content("network_def").to(device).train()
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=parser.get_parsed_content("learning_rate"),
                            weight_decay=parser.get_parsed_content("weight_decay"))
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    b, s = args.batch_size, args.image_size
    pool = 4  # a few distinct batches, cycled
    views = torch.rand(pool, 2, b, 1, s, s, device=device)
    stamps = []
    for i in range(args.warmup + args.iters):
        batch = {"view1": views[i % pool, 0], "view2": views[i % pool, 1]}
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = method(batch)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        method.on_step_end(None)
        float(loss.detach())  # the workflow reads the loss every step too
        sync(device)
        stamps.append(time.perf_counter())
    first = max(args.warmup - 1, 0)
    timed = args.iters if args.warmup else args.iters - 1
    return 2 * b * timed / (stamps[-1] - stamps[first])


def run(args: argparse.Namespace) -> dict:
    """Measure the plain loop, the bundle workflow and the plain loop again; report views/s, ratio, peak memory."""
    os.chdir(ROOT)  # the config's macros are relative to the bundle root
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.iters < 1 or (args.warmup == 0 and args.iters < 2):
        raise SystemExit("need --iters >= 1 (>= 2 without warm-up)")
    with tempfile.TemporaryDirectory() as out:
        datalist = write_datalist(args.dataset_dir, args.batch_size * (args.warmup + args.iters + 1), out)
        reset_peak(device)
        plain_before = plain_loop(args, device, out, datalist)
        plain_peak = peak_memory_mb(device)
        reset_peak(device)
        bundle_vps, workers = bundle_workflow(args, device, out, datalist)
        bundle_peak = peak_memory_mb(device)
        plain_after = plain_loop(args, device, out, datalist)
    plain_vps = (plain_before + plain_after) / 2
    return report(
        f"pretrain {args.method}{' + MICLe' if args.multi_instance else ''} ({args.backbone}, {args.image_size} px, "
        f"batch {args.batch_size}, {device.type}, {'AMP' if device.type == 'cuda' else 'fp32'}, "
        f"{torch.get_num_threads()} threads)",
        "views/s",
        bundle_vps,
        plain_vps,
        {
            "plain_runs": f"{plain_before:.2f} before, {plain_after:.2f} after the workflow",
            "peak_memory_mb": f"bundle {bundle_peak:.0f}, plain {plain_peak:.0f}"
            + (" (process RSS per phase; DataLoader workers not included)" if device.type == "cpu" else ""),
            "timed_iterations": f"{args.iters} after {args.warmup} warm-up",
            "num_workers": workers,
        },
    )


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
