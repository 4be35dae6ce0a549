"""Two-process DistributedDataParallel training on CPU (gloo), through Lightning."""

import json

import pytest
import torch

from nst_fast.export import load_model

from .conftest import nst_fast, tiny_overrides

pytestmark = pytest.mark.slow


def test_two_processes_share_the_data_keep_weights_in_sync_and_write_once(
    photo_folder, style_file, tmp_path
):
    run_dir, probe = tmp_path / "run", tmp_path / "probe"
    result = nst_fast(
        "train",
        *tiny_overrides(photo_folder, style_file, run_dir, steps=4),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "+trainer.use_distributed_sampler=true",
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
