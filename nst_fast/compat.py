"""The private parts of Lightning, Hydra, torchdata and torch that nst-fast relies on.

Everywhere else nst-fast keeps to these libraries' public APIs. Each private name it needs
is used here only, with a docstring saying what it relies on and why, and has a test in
tests/test_compat.py that fails naming the installed library version when an upgrade
changes it. pyproject.toml bounds each library to the versions those tests passed with: to
raise a bound, run ``pytest tests/test_compat.py`` with the new version installed and mend
what it names here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from hydra.core.override_parser.types import Override
    from pytorch_lightning.callbacks import ModelCheckpoint


# --- pytorch-lightning ------------------------------------------------------------------


def save_checkpoint_now(callback: ModelCheckpoint, trainer: pl.Trainer) -> None:
    """Save what ``callback`` saves on its schedule (its top-k file and last.ckpt) at the
    current step; nothing if it already saved this step or the trainer is not fitting.

    ModelCheckpoint has no public "save now". This runs the steps of its own periodic save,
    its private ``_should_skip_saving_checkpoint``, ``_monitor_candidates``,
    ``_save_topk_checkpoint`` and ``_save_last_checkpoint`` (pytorch-lightning 2.x), so the
    file names, the top-k bookkeeping and last.ckpt are Lightning's own. Used to save the
    final step of a run whose max_steps is not a multiple of the checkpoint interval, which
    a resumed run would otherwise train again.
    """
    if callback._should_skip_saving_checkpoint(trainer):
        return
    candidates = callback._monitor_candidates(trainer)
    callback._save_topk_checkpoint(trainer, candidates)
    callback._save_last_checkpoint(trainer, candidates)


# --- hydra-core -------------------------------------------------------------------------

#: The attributes of Hydra's parsed command line that ``nst-fast train`` reads.
HYDRA_FLAGS = (
    "overrides", "help", "hydra_help", "run", "multirun", "cfg", "info", "shell_completion",
    "config_dir", "config_path", "config_name", "experimental_rerun",
)  # fmt: skip


def hydra_command_line(args: list[str]) -> argparse.Namespace | None:
    """``args`` read by Hydra's own command-line parser (``HYDRA_FLAGS`` are among its
    attributes); None with a Hydra that has no such parser. A malformed flag raises
    SystemExit, as argparse does.

    ``nst-fast train`` checks its overrides before Hydra starts; reading them with Hydra's
    parser (``hydra._internal.utils.get_args_parser``, hydra-core 1.3) means --multirun,
    --cfg and the rest are understood exactly as Hydra will understand them.
    """
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError:
        return None
    flags, _ = get_args_parser().parse_known_args(args)
    return flags


def hydra_sweep_jobs(overrides: list[Override]) -> list[list[str]] | None:
    """The jobs a multirun of the parsed ``overrides`` runs, each its list of overrides,
    in Hydra's order; None with a Hydra that cannot say.

    Relies on the static ``BasicSweeper.split_arguments(overrides, max_batch_size)`` of
    ``hydra._internal.core_plugins.basic_sweeper`` (hydra-core 1.3), which returns batches of
    jobs: so a multirun's every job is checked with the sweep expansion Hydra itself uses.
    """
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    except ImportError:
        return None
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


# --- torchdata --------------------------------------------------------------------------

# The sampler's share of a StatefulDataLoader state: the same keys whatever the workers.
_SAMPLER_KEYS = (
    "_index_sampler_state",
    "_sampler_iter_state",
    "_sampler_iter_yielded",
    "_IterableDataset_len_called",
    "_shared_seed",
)


@dataclass(frozen=True)
class LoaderPosition:
    """A StatefulDataLoader's saved position in its epoch, out of torchdata's layout."""

    workers: int  # the worker processes it was saved with; 0: the main process loaded
    batches: int  # batches served up to the recorded sampler state
    unreplayed: int  # batches served after the workers' last snapshot (replayed on load)
    finished: Any  # torchdata's "iterator finished" flag, carried over as is
    sampler: dict[str, Any]  # the sampler's state, which does not depend on the workers
    base_seed: int | None  # the workers' base seed; None when saved without workers
    own_states: list[Any]  # the fetchers' and datasets' own states (None: they keep none)


def read_loader_state(state: dict[str, Any]) -> LoaderPosition:
    """The position a ``StatefulDataLoader.state_dict()`` records; KeyError for a state of
    another layout.

    torchdata refuses to load a state saved with another ``num_workers``; reading and
    rewriting it (``write_loader_state``) lets a run resume on a machine with another worker
    count. This relies on the private layout of torchdata 0.8 to 0.11: a single-process
    state holds ``_num_yielded``, the sampler keys, ``fetcher_state`` and ``dataset_state``;
    a worker loader's holds ``_snapshot`` (``_snapshot_step``, ``_main_snapshot`` with the
    sampler keys, ``_num_workers`` and ``_base_seed``, ``_worker_snapshots``) and
    ``_steps_since_snapshot``; both hold ``_iterator_finished``.
    """
    finished = state["_iterator_finished"]
    if "_num_yielded" in state:  # saved by a single-process loader
        return LoaderPosition(
            workers=0,
            batches=state["_num_yielded"],
            unreplayed=0,
            finished=finished,
            sampler={key: state[key] for key in _SAMPLER_KEYS},
            base_seed=None,
            own_states=[state["fetcher_state"], state["dataset_state"]],
        )
    snapshot = state["_snapshot"]
    main = snapshot["_main_snapshot"]
    workers = snapshot["_worker_snapshots"].values()
    return LoaderPosition(
        workers=main["_num_workers"],
        batches=snapshot["_snapshot_step"],
        unreplayed=state["_steps_since_snapshot"],
        finished=finished,
        sampler={key: main[key] for key in _SAMPLER_KEYS},
        base_seed=main["_base_seed"],
        own_states=[w[key] for w in workers for key in ("fetcher_state", "dataset_state")],
    )


def write_loader_state(position: LoaderPosition, num_workers: int) -> dict[str, Any]:
    """A state that a StatefulDataLoader with ``num_workers`` workers loads to continue from
    ``position``: its sampler state and batch count, workers with no state of their own
    (the position's ``own_states`` are not carried). Same layout as ``read_loader_state``.

    A worker loader's base seed is the position's, or drawn as DataLoader draws it.
    """
    if num_workers == 0:
        return {
            **position.sampler,
            "_num_yielded": position.batches,
            "fetcher_state": None,
            "dataset_state": None,
            "_iterator_finished": position.finished,
        }
    base_seed = position.base_seed
    if base_seed is None:
        base_seed = int(torch.empty((), dtype=torch.int64).random_().item())
    workers = {
        f"worker_{i}": {"worker_id": i, "fetcher_state": None, "dataset_state": None}
        for i in range(num_workers)
    }
    return {
        "_snapshot": {
            "_snapshot_step": position.batches,
            "_last_yielded_worker_id": num_workers - 1,
            "_main_snapshot": {
                **position.sampler,
                "_num_workers": num_workers,
                "_base_seed": base_seed,
            },
            "_worker_snapshots": workers,
        },
        "_steps_since_snapshot": 0,
        "_iterator_finished": position.finished,
    }


# --- torch ------------------------------------------------------------------------------


def tensor_version(t: torch.Tensor) -> int:
    """A number that changes whenever ``t`` is modified in place: its private version
    counter, ``Tensor._version`` (torch 2.x), which autograd keeps for the same purpose.

    Lets a cache keyed on a network's weights notice an optimizer step or a
    ``load_state_dict`` without hashing the weights. Inference tensors have no counter
    (reading it raises) and give 0: outside inference mode they cannot be modified.
    """
    return 0 if t.is_inference() else t._version


#: The private probes in ``torch.cpu`` for bf16 arithmetic in hardware (AVX512-BF16, AMX).
CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware, by ``torch.cpu``'s private probes
    ``CPU_BF16_PROBES`` (torch 2.x; a probe that is gone counts as no).

    torch has no public question for it; where bf16 is only emulated it is slower than
    fp32, so half precision on a CPU is chosen by this answer. The probes are looked up at
    each call, so tests may replace them.
    """
    return any(getattr(torch.cpu, name, lambda: False)() for name in CPU_BF16_PROBES)


def native_group_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, groups: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group norm of a (B, C, H, W) ``x`` with its statistics: the output, and each sample's
    and group's mean and reciprocal standard deviation, (B, groups) each.

    ``torch.ops.aten.native_group_norm`` (torch 2.x) is the kernel behind F.group_norm, which
    drops the statistics; an autograd Function with a backward pass of its own (the CPU
    training kernels) keeps them instead of computing them again. Its argument list is
    ATen's, not a public Python API.
    """
    b, c, h, w = x.shape
    return torch.ops.aten.native_group_norm(x, weight, bias, b, c, h * w, groups, eps)


def conv2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: int | tuple[int, int],
    need: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The gradients of an unpadded, undilated, ungrouped ``conv2d(x, weight, bias,
    stride)`` with respect to x, weight and bias, those that ``need`` asks for (else None).

    ``torch.ops.aten.convolution_backward`` (torch 2.x) is the kernel autograd itself runs;
    called directly, an autograd Function picks the memory layout of each gradient. Its
    argument list is ATen's, not a public Python API.
    """
    stride = [stride, stride] if isinstance(stride, int) else list(stride)
    bias_sizes = [weight.shape[0]] if need[2] else None
    return torch.ops.aten.convolution_backward(
        grad, x, weight, bias_sizes, stride, [0, 0], [1, 1], False, [0, 0], 1, list(need)
    )


def drop_input_casts(traced: torch.jit.ScriptModule, input_index: int) -> None:
    """Remove the ``aten::to`` casts applied to one input of a traced module, so that the
    module takes that input as it comes (TorchScript's graph API, which torch's own passes
    use: ``Value.uses``, ``Node.output``, ``replaceAllUsesWith``, ``destroy``)."""
    value = list(traced.graph.inputs())[input_index]
    for use in list(value.uses()):
        if use.user.kind() == "aten::to":
            use.user.output().replaceAllUsesWith(value)
            use.user.destroy()
