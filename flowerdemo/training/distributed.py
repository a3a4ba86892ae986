"""Running the trainer on one process or many under torchrun (DDP): which process this is, the device it trains
on, the process group, and the epoch figures summed over the processes. NCCL between GPUs, gloo between CPU
processes; without torchrun everything here is a no-op (rank 0 of 1)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Processes:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (a download, a cache fill), the others after it is done."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def say(self, message: str) -> None:
        """Print on rank 0 only."""
        if self.is_main:
            print(message, flush=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)  # under torchrun: one GPU per process
    return device


def init_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join torchrun's process group when its environment (WORLD_SIZE, RANK, LOCAL_RANK...) says so: NCCL
    between GPUs, gloo between CPU processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Processes(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                         device_id=device if device.type == "cuda" else None)
    return Processes(rank, world_size, local_rank), device


def wrap(model: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """The model as the training loop drives it: inside DistributedDataParallel when there are several processes."""
    if not processes.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel (or the network itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def reduce_epoch_stats(row: dict, processes: Processes, device: torch.device) -> dict:
    """One epoch's training figures over all processes: image-weighted loss and accuracy, the slowest time."""
    if not processes.distributed:
        return row
    seen = row["train_images"]
    totals = torch.tensor([row["train_loss"] * seen, row["train_acc"] * seen, seen, row["epoch_seconds"]],
                          dtype=torch.float64, device=device)
    sums = totals[:3].clone()
    torch.distributed.all_reduce(sums)
    slowest = totals[3:].clone()
    torch.distributed.all_reduce(slowest, op=torch.distributed.ReduceOp.MAX)
    return dict(row, train_loss=(sums[0] / sums[2]).item(), train_acc=(sums[1] / sums[2]).item(),
                train_images=int(sums[2].item()), epoch_seconds=slowest.item())


def close_processes(processes: Processes) -> None:
    """Leave the process group (after training, or after an error)."""
    if processes.distributed:
        torch.distributed.destroy_process_group()
