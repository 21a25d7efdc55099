"""torch.distributed set-up shared by every multi-process command (train, train-generator, generate).

Under torchrun the usual variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT) are set and a
process group is opened: nccl on CUDA, gloo on CPU. Without them everything runs as one process and
no group is opened (unlike the host, which always opens one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Open the process group when launched by torchrun; pick cuda:local_rank or cpu."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if device is None:
        dev = init_distributed_device()
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            # config.device = "cuda" means this process's GPU; torch.cuda.set_device refuses an index-less device.
            dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, local_rank, world, dev)


def barrier(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def describe_device(device: str | torch.device | None = None) -> dict:
    """Where a result was computed, for its JSON: the device type, the CPU (and GPU) model, cores, this
    process's threads, torch and Python versions. ``device`` None: the one ``init_distributed`` would pick."""
    import platform

    dev = torch.device(device) if device is not None else init_distributed_device()
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    out = {
        "device": dev.type,
        "cpu": cpu or platform.processor(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    return out


def init_distributed_device() -> torch.device:
    """The device ``init_distributed(None)`` picks for this process, without opening anything."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
