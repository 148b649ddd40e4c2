"""Process-group helpers for multi-process training and evaluation with ``torch.distributed``.

mmkgc distributes with PyTorch's own machinery only: processes are started by ``torchrun`` (or by
``mmkgc train CONFIG --nproc N``, which calls torchrun's launcher, :mod:`torch.distributed.run`), the process
group is initialised from the environment variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``), gradients are averaged by
:class:`torch.nn.parallel.DistributedDataParallel`, and evaluation shards its queries and gathers the integer
ranks with ``all_gather``.  The backend is NCCL when CUDA is available and gloo on the CPU.

Every helper degrades to the single-process behaviour when no process group is initialised (rank 0 of a world of
size 1), so library code calls them unconditionally.
"""

from __future__ import annotations

import json
import math
import os
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_variable",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "batch_shard",
    "broadcast_flag",
    "broadcast_object",
    "default_backend",
    "destroy_distributed",
    "device_for_rank",
    "env_world_size",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launch",
    "local_rank",
    "mean_over_ranks",
    "raise_if_nonfinite",
    "shard_bounds",
]


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_rank() -> int:
    """``LOCAL_RANK`` as set by torchrun (0 when unset): the process's index on its node (its GPU)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def default_backend() -> str:
    """``"nccl"`` when CUDA is available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that logs, writes files and shows progress."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> bool:
    """Initialise the default process group from torchrun's environment variables, if this is a multi-process job.

    Does nothing when ``WORLD_SIZE`` is unset or 1, or when a group is already initialised (for example by a test
    that called :func:`torch.distributed.init_process_group` itself).  With NCCL the process's CUDA device is set to
    ``cuda:LOCAL_RANK`` first.

    :param backend: ``"nccl"``, ``"gloo"``, or ``None`` for :func:`default_backend`.
    :param timeout_minutes: collective timeout (a rank that never answers raises instead of hanging forever).
    :returns: ``True`` when this call created the process group (the caller should then call
        :func:`destroy_distributed` when done), ``False`` otherwise.
    :raises RuntimeError: ``WORLD_SIZE > 1`` but ``torch.distributed`` is unavailable, or the rendezvous failed.
    """
    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=timeout_minutes))
    return True


def destroy_distributed() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(name: str | None = "auto") -> torch.device:
    """The device this process should use: ``auto`` gives ``cuda:LOCAL_RANK`` under NCCL / CUDA, else CPU.

    An explicit ``cuda`` (no index) is also mapped to ``cuda:LOCAL_RANK`` in a multi-process job, so every rank
    drives its own GPU.
    """
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank() if is_distributed() or env_world_size() > 1 else 0)
    return device


def _comm_device() -> torch.device:
    """Where tensors must live for a collective of the current backend (CUDA for NCCL)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank reaches this point (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """A JSON-serialisable ``obj`` as held by rank ``src``, on every rank.

    The object travels as UTF-8 JSON in a byte tensor (length first, then the bytes), so nothing is ever
    unpickled; tuples arrive as lists.

    :raises TypeError: ``obj`` is not JSON-serialisable (on rank ``src``).
    """
    if not is_distributed():
        return obj
    device = _comm_device()
    if get_rank() == src:
        payload = torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8).to(device)
        length = torch.tensor([payload.numel()], dtype=torch.long, device=device)
    else:
        length = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(length, src=src)
    if get_rank() != src:
        payload = torch.empty(int(length.item()), dtype=torch.uint8, device=device)
    dist.broadcast(payload, src=src)
    return json.loads(bytes(payload.cpu().numpy().tobytes()).decode("utf-8"))


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s boolean on every rank (one 1-element tensor broadcast; cheap enough for every step)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_comm_device())
    dist.broadcast(t, src=src)
    return bool(t.item())


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of a short list of floats over ranks (float64)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def average_gradients(grads: Sequence[torch.Tensor | None],
                      params: Sequence[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    """The mean over ranks of each parameter's gradient, for optimisation steps outside DDP (the auxiliary steps
    of :mod:`mmkgc.models.auxiliary`).

    A gradient that is ``None`` on a rank (the parameter was not used by its batch) counts as zeros there; a
    parameter unused on every rank stays ``None``, so its optimiser skips it as in one process.  All gradients of
    one dtype travel in one flat all-reduce.  Single process: ``grads`` unchanged.

    :param grads: one entry per parameter, shaped like it (dense), or ``None``.
    :param params: the parameters (shapes and dtypes of the missing gradients).
    :returns: the averaged gradients, same order.
    """
    if not is_distributed():
        return list(grads)
    device = _comm_device()
    world = dist.get_world_size()
    used = torch.tensor([g is not None for g in grads], dtype=torch.int32, device=device)
    dist.all_reduce(used, op=dist.ReduceOp.SUM)
    out: list[torch.Tensor | None] = [None] * len(params)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, p in enumerate(params):
        by_dtype.setdefault(p.dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        flat = torch.cat([(grads[i] if grads[i] is not None else torch.zeros_like(params[i])).reshape(-1)
                          .to(device=device, dtype=dtype) for i in idx])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for i in idx:
            n = params[i].numel()
            if int(used[i]) > 0:
                out[i] = flat[offset:offset + n].view_as(params[i]).to(params[i].device)
            offset += n
    return out


def all_gather_variable(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Gather tensors whose first dimension differs between ranks; returns them in rank order, on the CPU.

    The lengths are exchanged first, every rank's tensor is padded to the longest, gathered with
    :func:`torch.distributed.all_gather`, and the padding is cut off again.  Values are copied bit for bit.

    :param tensor: ``[n_rank, ...]`` with the same trailing shape and dtype on every rank.
    :returns: ``world_size`` tensors ``[n_i, ...]``; ``[tensor.cpu()]`` in a single process.
    """
    if not is_distributed():
        return [tensor.detach().cpu()]
    device = _comm_device()
    world = dist.get_world_size()
    local = tensor.detach().to(device).contiguous()
    length = torch.tensor([local.shape[0]], dtype=torch.long, device=device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    sizes = [int(x.item()) for x in lengths]
    longest = max(sizes)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return [g[:n].cpu() for g, n in zip(gathered, sizes)]


def raise_if_nonfinite(values: Sequence[float], epoch: int, first_step: int, what: str = "training loss") -> None:
    """Raise the trainer's non-finite-loss error on *every* rank when any rank's training loss is not finite.

    Under DDP a rank that raised alone would leave the others waiting in the next gradient all-reduce until the
    process group's timeout (30 minutes).  So the ranks first agree on one flag (an all-reduce with ``MAX`` of
    "some value here is not finite"); only when it is set are the values gathered (:func:`all_gather_variable`),
    and every rank raises the same message naming the first bad value in rank order.  Every rank must call this
    at the same point of its loop (the trainer does: all ranks run the same number of steps).

    :param values: this rank's step losses (floats), in step order; ranks may pass different counts.
    :param epoch: the 1-based epoch, for the message.
    :param first_step: the global step index of ``values[0]``, for the message.
    :param what: what the values are, for the message (e.g. ``auxiliary step 'generator': loss``).
    :raises FloatingPointError: ``WHAT became VALUE [on rank R of W] at epoch E, step S; lower the learning rate
        or check the features`` (the rank is named only in a multi-process run).
    """
    local = [float(v) for v in values]
    bad_here = not all(math.isfinite(v) for v in local)
    where = ""
    if is_distributed():
        flag = torch.tensor([1 if bad_here else 0], dtype=torch.int32, device=_comm_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not int(flag.item()):
            return
        gathered = [t.tolist() for t in all_gather_variable(torch.tensor(local, dtype=torch.float64))]
        rank, index, value = next((r, i, v) for r, vals in enumerate(gathered) for i, v in enumerate(vals)
                                  if not math.isfinite(v))
        where = f" on rank {rank} of {len(gathered)}"
    else:
        if not bad_here:
            return
        index, value = next((i, v) for i, v in enumerate(local) if not math.isfinite(v))
    raise FloatingPointError(f"{what} became {value}{where} at epoch {epoch}, step {first_step + index}; "
                             "lower the learning rate or check the features")


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of each named value (the trainer's logged per-epoch loss terms), the same on every rank.

    The names are exchanged first (UTF-8 JSON through :func:`all_gather_variable`, nothing is unpickled), so a
    name that only some ranks have is averaged over the ranks that have it; then sums and counts travel in one
    float64 all-reduce.  Three small collectives: call it once per epoch or logging interval, not per step, and
    on every rank.  One process: a copy of ``values``.

    :param values: name -> this rank's value (e.g. its mean of a term over its local batches).
    :returns: name -> ``sum over ranks having it / number of those ranks`` (names sorted; one process: as given).
    """
    if not is_distributed():
        return {k: float(v) for k, v in values.items()}
    encoded = torch.frombuffer(bytearray(json.dumps(sorted(values)).encode("utf-8")), dtype=torch.uint8)
    names = sorted({name for part in all_gather_variable(encoded)
                    for name in json.loads(bytes(part.numpy().tobytes()).decode("utf-8"))})
    if not names:  # no rank has a value (the same decision on every rank: the union is shared)
        return {}
    local = torch.zeros(2, len(names), dtype=torch.float64)
    for j, name in enumerate(names):
        if name in values:
            local[0, j], local[1, j] = float(values[name]), 1.0
    local = local.to(_comm_device())
    dist.all_reduce(local, op=dist.ReduceOp.SUM)
    sums, counts = local.cpu().tolist()
    return {name: total / count for name, total, count in zip(names, sums, counts)}


def shard_bounds(n: int, rank: int, world_size: int, align: int = 1) -> tuple[int, int]:
    """The contiguous range ``[start, stop)`` of ``n`` items that rank ``rank`` of ``world_size`` handles.

    Ranges are disjoint, ordered by rank and cover ``[0, n)``; their sizes differ by at most ``align`` (the
    boundaries are multiples of ``align``, so blocks of ``align`` items are never split).

    :raises ValueError: for ``rank`` outside ``[0, world_size)`` or ``align < 1``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    blocks = -(-n // align)
    per, extra = divmod(blocks, world_size)
    first = rank * per + min(rank, extra)
    last = first + per + (1 if rank < extra else 0)
    return min(n, first * align), min(n, last * align)


def batch_shard(n: int, rank: int, world_size: int) -> tuple[int, int, float]:
    """This rank's part of a global batch of ``n`` rows, and the factor its mean loss is multiplied by.

    The rows are split as :func:`torch.tensor_split` does (sizes differ by at most one).  DDP averages the
    gradients of the ranks, so multiplying a rank's mean loss by ``n_rank * world_size / n`` makes the averaged
    gradient exactly the gradient of the mean loss over the whole global batch, as in a single process.  A rank
    whose part would be empty (``n < world_size``) gets row ``[0, 1)`` with factor 0: it still takes part in the
    gradient all-reduce, but contributes nothing.

    :returns: ``(start, stop, factor)``.
    """
    start, stop = shard_bounds(n, rank, world_size)
    if stop <= start:
        return 0, min(1, n), 0.0
    return start, stop, (stop - start) * world_size / n


def launch(argv: Sequence[str], nproc: int, module: str = "mmkgc") -> int:
    """Run ``python -m module *argv`` in ``nproc`` local processes with torchrun's elastic launcher.

    Equivalent to ``torchrun --standalone --nproc-per-node NPROC -m mmkgc ARGV...``: torchrun sets ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every child, and
    :func:`init_distributed` picks them up.

    :returns: 0 when every process succeeded.
    :raises torch.distributed.elastic.multiprocessing.errors.ChildFailedError: a process failed (torchrun's
        report names the rank and its error).
    """
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", "--nproc-per-node", str(int(nproc)), "--module", module, *[str(a) for a in argv]]
    )
    run(args)
    return 0
