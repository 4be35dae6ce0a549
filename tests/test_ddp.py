"""Two-process DistributedDataParallel training on CPU (gloo), through Lightning."""

import json
import os
import signal
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from nst_fast.export import load_model

from .conftest import REPO, ckpt_step, cli_env, nst_fast, tiny_overrides

pytestmark = pytest.mark.slow

TWO_PROCESSES = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
    "+trainer.use_distributed_sampler=true",
]


def test_two_processes_share_the_data_keep_weights_in_sync_and_write_once(
    photo_folder, style_file, tmp_path
):
    run_dir, probe = tmp_path / "run", tmp_path / "probe"
    result = nst_fast(
        "train",
        *tiny_overrides(photo_folder, style_file, run_dir, steps=4),
        *TWO_PROCESSES,
        "+callbacks.probe._target_=tests.probes.RecordRank",
        f"+callbacks.probe.folder={probe}",
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # Lightning's DistributedSampler gives each rank its own half of the 8 photos per
    # epoch (2 steps of batch 2); 4 steps are 2 epochs.
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 4 * 2
    first_epoch = [set(r["seen"][:4]) for r in ranks]
    assert first_epoch[0].isdisjoint(first_epoch[1])
    assert len(first_epoch[0] | first_epoch[1]) == 8
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step=2.ckpt",
        "step=4.ckpt",
    ]
    assert len(list(run_dir.rglob("model.pt"))) == 1
    assert len(list((run_dir / "tensorboard").glob("events.*"))) == 1

    # The 2-process checkpoint resumes in a single process.
    resumed = nst_fast(
        "train", *tiny_overrides(photo_folder, style_file, run_dir, steps=6), "ckpt_path=last"
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert load_model(run_dir / "model.pt")[1].step == 6
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6


def train_two_processes(*overrides: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`nst-fast train` on two gloo processes; a run that outlasts ``timeout`` (one process
    waiting for the other in an all-reduce, which gloo gives up on after 30 minutes) is
    killed, both processes, and fails the test."""
    args = [sys.executable, "-m", "nst_fast", "train", *overrides, *TWO_PROCESSES]
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=REPO,
        start_new_session=True,  # its own process group, rank 1 included, for os.killpg
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"a process waited for the other until killed:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def test_a_process_whose_photos_are_all_unreadable_trains_on_beside_the_others(
    photo_folder, style_file, tmp_path
):
    # Batches of one photo: the process that draws the unreadable one has none that step.
    # One epoch of 8 photos is 4 steps on each process; one of them draws it.
    (photo_folder / "000000000003.jpg").write_bytes(b"not a photo")
    run_dir, probe = tmp_path / "run", tmp_path / "probe"
    result = train_two_processes(
        *tiny_overrides(photo_folder, style_file, run_dir, steps=4),
        "data.batch_size=1",
        "+callbacks.probe._target_=tests.probes.RecordRank",
        f"+callbacks.probe.folder={probe}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(len(r["seen"]) for r in ranks) == [3, 4]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert load_model(run_dir / "model.pt")[1].step == 4


class NanPhotosOnRankOne(pl.Callback):
    """Rank 1's photos of step ``step`` become NaN, and so its loss: the other rank's
    loss stays finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == 1 and trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))


def test_a_non_finite_loss_on_one_process_stops_every_process_with_one_line(
    photo_folder, style_file, tmp_path
):
    run_dir = tmp_path / "run"
    result = train_two_processes(
        *tiny_overrides(photo_folder, style_file, run_dir, steps=6),
        "+callbacks.nan._target_=tests.test_ddp.NanPhotosOnRankOne",
        "+callbacks.nan.step=2",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "nst-fast train: error: the loss became nan at step 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 2
