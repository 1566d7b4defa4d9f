"""Peak memory of a phase: CUDA's allocator peak on a GPU, the process's peak resident set size (VmHWM) on a CPU.

On Linux, ``reset_peak`` starts a new VmHWM at the current RSS (``/proc/self/clear_refs``), so each phase gets a
peak of its own; where that is not allowed, the peak covers the whole process.
"""

from __future__ import annotations

import resource

import torch

__all__ = ["status_kb", "reset_peak", "peak_memory_mb", "memory_note"]


def status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in kB (``VmRSS``, ``VmHWM``), or None where there is none (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> bool:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's peak RSS (VmHWM). Returns False
    where the kernel does not allow it (the peak then covers the whole process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size since ``reset_peak`` (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = status_kb("VmHWM")
    return peak / 1024 if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_note(device: torch.device, workers: bool = False) -> str:
    """What ``peak_memory_mb`` measured on ``device`` (``workers``: the phases ran DataLoader workers)."""
    if device.type == "cuda":
        return "CUDA allocator peak (max_memory_allocated) per phase"
    return "process peak RSS (VmHWM) per phase" + ("; DataLoader workers not included" if workers else "")
