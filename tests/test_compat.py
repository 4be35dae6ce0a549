"""Each private library API in nst_fast/compat.py, exercised on the installed version.

A failure names the library and its version: that version changed what compat.py relies
on. Mend compat.py for it, then move the bound in pyproject.toml.
"""

from __future__ import annotations

from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torchdata.stateful_dataloader import StatefulDataLoader

from nst_fast import compat


@contextmanager
def relied_on(library: str, api: str):
    """Turn any error below into one line: the library, its installed version, the API."""
    try:
        yield
    except Exception as err:
        pytest.fail(
            f"{library} {version(library)}: {api} changed ({type(err).__name__}: {err}); "
            "update nst_fast/compat.py for it, then the bound in pyproject.toml",
            pytrace=False,
        )


# --- pytorch-lightning ------------------------------------------------------------------


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 2), batch_size=1)


class _SaveAt(pl.Callback):
    """At one step, calls compat.save_checkpoint_now and lists the files it wrote; then
    moves them aside and calls it again, which must write nothing for the same step."""

    def __init__(self, checkpoint: ModelCheckpoint, step: int) -> None:
        self.checkpoint, self.step = checkpoint, step
        self.written: list[str] = []
        self.again: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        folder = Path(self.checkpoint.dirpath)
        compat.save_checkpoint_now(self.checkpoint, trainer)
        self.written = sorted(path.name for path in folder.iterdir())
        for path in folder.iterdir():
            path.rename(path.with_suffix(".aside"))
        compat.save_checkpoint_now(self.checkpoint, trainer)
        self.again = sorted(path.name for path in folder.iterdir())
        for path in folder.iterdir():
            path.rename(path.with_suffix(".ckpt"))


def test_lightning_model_checkpoint_saves_at_the_current_step(tmp_path):
    api = (
        "ModelCheckpoint's _should_skip_saving_checkpoint, _monitor_candidates, "
        "_save_topk_checkpoint and _save_last_checkpoint"
    )
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, save_last=True, save_top_k=-1, every_n_epochs=0, filename="{step}"
    )
    probe = _SaveAt(checkpoint, step=2)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        callbacks=[checkpoint, probe],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with relied_on("pytorch-lightning", api):
        trainer.fit(_Tiny())
        assert probe.written == ["last.ckpt", "step=2.ckpt"], probe.written
        assert probe.again == ["last.aside", "step=2.aside"], "saved the same step twice"
        saved = torch.load(tmp_path / "last.ckpt", weights_only=False, map_location="cpu")
        assert saved["global_step"] == 2


# --- hydra-core -------------------------------------------------------------------------


def test_hydra_reads_its_command_line():
    with relied_on("hydra-core", "hydra._internal.utils.get_args_parser"):
        flags = compat.hydra_command_line(["--multirun", "--cfg", "job", "a=1,2", "+b=x"])
        assert flags is not None, "the parser is gone"
        missing = [name for name in compat.HYDRA_FLAGS if not hasattr(flags, name)]
        assert not missing, f"the parsed command line has no {', '.join(missing)}"
        assert flags.multirun and not flags.run and flags.cfg == "job"
        assert flags.overrides == ["a=1,2", "+b=x"]


def test_hydra_expands_a_sweep_into_its_jobs():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["a=1,2", "b=x", "c=3,4"])
    with relied_on("hydra-core", "hydra._internal BasicSweeper.split_arguments"):
        jobs = compat.hydra_sweep_jobs(parsed)
        assert jobs is not None, "BasicSweeper is gone"
        assert sorted(jobs) == [
            ["a=1", "b=x", "c=3"],
            ["a=1", "b=x", "c=4"],
            ["a=2", "b=x", "c=3"],
            ["a=2", "b=x", "c=4"],
        ]


# --- torchdata --------------------------------------------------------------------------


def numbers_loader(workers: int) -> StatefulDataLoader:
    """Twelve numbers in a seeded shuffled order, two a batch."""
    return StatefulDataLoader(
        list(range(12)),
        batch_size=2,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize(("before", "after"), [(0, 1), (1, 0)])
def test_torchdata_loader_state_is_read_and_written(before, after):
    api = "the layout of StatefulDataLoader.state_dict()"
    with relied_on("torchdata", api):
        loader = numbers_loader(before)
        batches = iter(loader)
        seen = [next(batches).tolist() for _ in range(3)]
        state = loader.state_dict()
        rest = [batch.tolist() for batch in batches]
        assert sorted(n for batch in seen + rest for n in batch) == list(range(12))

        position = compat.read_loader_state(state)
        assert position.workers == before
        assert position.batches + position.unreplayed == 3
        assert position.own_states and all(s is None for s in position.own_states)
        assert (position.base_seed is None) == (before == 0)

        moved = numbers_loader(after)
        moved.load_state_dict(compat.write_loader_state(position, after))
        assert [batch.tolist() for batch in moved] == rest


# --- torch ------------------------------------------------------------------------------


def test_torch_tensor_version_changes_with_every_in_place_change():
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    with relied_on("torch", "Tensor._version"):
        versions = [compat.tensor_version(weight)]
        weight.grad = torch.ones(3)
        optimizer.step()
        versions.append(compat.tensor_version(weight))
        torch.nn.Linear(3, 1).weight.data.copy_(weight)  # read, not changed: same version
        versions.append(compat.tensor_version(weight))
        with torch.no_grad():
            weight.copy_(torch.ones(3))  # as load_state_dict does
        versions.append(compat.tensor_version(weight))
        assert all(isinstance(v, int) for v in versions)
        assert versions[0] < versions[1] == versions[2] < versions[3], versions
    with torch.inference_mode():
        made_in_inference = torch.zeros(3)
    assert compat.tensor_version(made_in_inference) == 0


def test_torch_cpu_bf16_probes_answer():
    with relied_on("torch", f"torch.cpu.{' and torch.cpu.'.join(compat.CPU_BF16_PROBES)}"):
        for name in compat.CPU_BF16_PROBES:
            assert isinstance(getattr(torch.cpu, name)(), bool), f"torch.cpu.{name}()"
        assert isinstance(compat.cpu_has_native_bf16(), bool)


def test_torch_native_group_norm_returns_the_output_and_statistics():
    x = torch.randn(2, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    weight, bias = torch.rand(6) + 0.5, torch.randn(6)
    with relied_on("torch", "torch.ops.aten.native_group_norm"):
        y, mean, rstd = compat.native_group_norm(x, weight, bias, groups=3, eps=1e-5)
        groups = x.reshape(2, 3, -1)
        torch.testing.assert_close(y, torch.nn.functional.group_norm(x, 3, weight, bias, 1e-5))
        torch.testing.assert_close(mean, groups.mean(-1))
        variance = groups.var(-1, unbiased=False)
        torch.testing.assert_close(rstd, (variance + 1e-5).rsqrt())


@pytest.mark.parametrize("stride", [1, 2])
def test_torch_convolution_backward_gives_autograds_gradients(stride):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 8, generator=g, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(4, generator=g, requires_grad=True)
    y = torch.nn.functional.conv2d(x, weight, bias, stride)
    grad = torch.randn(y.shape, generator=g)
    expected = torch.autograd.grad(y, (x, weight, bias), grad)
    with relied_on("torch", "torch.ops.aten.convolution_backward"):
        got = compat.conv2d_backward(grad, x.detach(), weight.detach(), stride, (True,) * 3)
        for name, a, b in zip(("input", "weight", "bias"), got, expected, strict=True):
            torch.testing.assert_close(a, b, msg=lambda m, name=name: f"{name}: {m}")
        only_weight = compat.conv2d_backward(
            grad, x.detach(), weight.detach(), stride, (False, True, False)
        )
        assert only_weight[0] is None and only_weight[2] is None
        torch.testing.assert_close(only_weight[1], expected[1])


class _CastsItsSecondInput(torch.nn.Module):
    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w.to(x.device, torch.float32)


def test_torchscript_graph_drops_the_casts_a_trace_recorded_on_an_input():
    example = (torch.ones(2), torch.ones(2))
    traced = torch.jit.trace(_CastsItsSecondInput(), example)
    with relied_on("torch", "TorchScript's graph API (Value.uses, replaceAllUsesWith, destroy)"):
        compat.drop_input_casts(traced, input_index=2)
        assert "aten::to" not in str(traced.graph)
    w = torch.tensor([2.0, 3.0], dtype=torch.float64)  # the cast's dtype would make it fp32
    assert traced(torch.ones(2, dtype=torch.float64), w).dtype == torch.float64
