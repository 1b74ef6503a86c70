"""Data parallelism on Hugging Face `accelerate`: which share of the work is this process's, and gathering.

One process (a notebook, `riser-lite sft`) and many (`accelerate launch` or `torchrun` in front of the same
command) run the same code, and the numbers mean the same at any process count:

- **SFT cuts a step's global batch**, fixed by the seed, into one contiguous share per process (`share`);
  a share's loss is normalised by the *global* token count, so DDP's average is the global-batch gradient.
- **Evaluation deals out whole batches** (`my_batches`) and `gather_by_index` returns every result on every
  process in the one-process order.
- **RL splits the rollouts, not the update**: every process updates on the whole gathered step, and
  `GradientAveraging` keeps the copies identical.
- **Only the main process writes** run folders, metrics and checkpoints (`is_main`).

With one process nothing is wrapped or communicated: every number is bit-for-bit the plain loop's. Under
several processes the weights differ only by the order of floating-point additions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIXED_PRECISION = ("no", "bf16", "fp16")


def _state():
    import torch
    from accelerate import PartialState

    # Without a GPU, accelerate joins the launcher's processes (gloo) only when told it runs on CPU.
    return PartialState(cpu=not torch.cuda.is_available())


def rank_and_world() -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) outside a launcher."""
    state = _state()
    return state.process_index, state.num_processes


def is_main() -> bool:
    """True in the process that writes files (the only process outside a launcher)."""
    return _state().is_main_process


def barrier() -> None:
    """Wait until every process gets here (a no-op in one process)."""
    _state().wait_for_everyone()


def share(items: Sequence, rank: int, world: int) -> list:
    """Process `rank`'s contiguous share of `items`: [n*rank//world, n*(rank+1)//world)."""
    n = len(items)
    return list(items[n * rank // world: n * (rank + 1) // world])


def my_batches(num_batches: int, rank: int, world: int) -> range:
    """Indices of the batches process `rank` evaluates: rank, rank + world, ..."""
    return range(rank, num_batches, world)


def gather_by_index(results: list[tuple[int, Any]]) -> list[Any]:
    """Every process's (index, result) pairs, on every process, as results sorted by index.

    Results must be picklable by torch.distributed (plain lists and numbers here).
    """
    from accelerate.utils import gather_object

    if _state().num_processes > 1:
        results = gather_object(results)
    return [value for _, value in sorted(results, key=lambda pair: pair[0])]


def make_accelerator(mixed_precision: str = "no", micro_batch: int = 1):
    """An `accelerate.Accelerator` for a training loop, on each process's GPU if there is one.

    mixed_precision: one of `MIXED_PRECISION` (autocast around the forward pass; weights stay fp32).
    micro_batch: examples per process per step, which a launcher's DeepSpeed config needs. Each call starts
    a fresh accelerator state (a notebook can train in fp32, then in bf16) but keeps the process group.
    """
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    check_precision(mixed_precision)
    _state()  # the process group first, with the CPU rule above
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)
    if uses_deepspeed(accelerator):
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch
    return accelerator


def check_precision(mixed_precision: str) -> None:
    """Refuse fp16 autocast without a GPU (ValueError): accelerate accepts it there and changes nothing,
    so the run would record a precision it never used."""
    import torch

    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU and this run is on the CPU; use 'no' (or "
                         "'bf16', which CPUs autocast)")


def uses_deepspeed(accelerator) -> bool:
    """True when the launcher configured DeepSpeed (its engine owns the optimizer and its state)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


class GradientAveraging:
    """An optimizer whose `step` first averages every parameter's gradient across the processes.

    For RL, where every process computes the same update: GPU kernels with atomic adds (the embedding
    backward) are not bitwise deterministic, and averaging keeps the replicas from drifting apart.
    Everything else (param_groups, state_dict, zero_grad) is the wrapped optimizer's.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self, closure=None):
        import torch

        world = torch.distributed.get_world_size()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad.div_(world)
        return self.optimizer.step(closure)
