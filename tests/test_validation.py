"""Validation while training: held-out photos, the val/ figures, hp_metric, best.ckpt."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from nst_fast.config import compose
from nst_fast.data.datamodule import PhotoDataModule
from nst_fast.errors import NstFastError
from nst_fast.evaluate import evaluate_model
from nst_fast.export import load_network
from nst_fast.images import list_images, save_image
from nst_fast.losses.vgg import vgg_features
from nst_fast.training.train import override_settings, train
from nst_fast.training.validation import mean_over_photos

from .conftest import make_photo, nst_fast, scalars, tiny_overrides


def with_validation(overrides: list[str], every: int = 2, images: int = 2) -> list[str]:
    """``tiny_overrides`` with validation on: ``images`` held-out photos, 32 px squares,
    every ``every`` steps; Hydra's run directory left out (``train`` is given it)."""
    kept = [o for o in overrides if not o.startswith(("data.val_images=", "hydra."))]
    return [
        *kept,
        f"data.val_images={images}",
        "data.val_size=32",
        f"trainer.val_check_interval={every}",
    ]


def hparams_row(run_dir: Path) -> dict:
    """The settings of a run's row in TensorBoard's HPARAMS tab, and its metrics' tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    settings = {
        key: value.string_value or value.number_value
        for key, value in start.session_start_info.hparams.items()
    }
    return {
        "settings": settings,
        "metrics": [m.name.tag for m in experiment.experiment.metric_infos],
    }


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A randomly initialised VGG16 saved once, so that training and `nst-fast evaluate`
    measure with the same loss network."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.pt"
    torch.manual_seed(0)
    torch.save(vgg_features("vgg16").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def validated(tmp_path_factory, vgg_file) -> dict:
    """One tiny run with validation every 2 steps and at its end (step 5)."""
    root = tmp_path_factory.mktemp("validated")
    photos = root / "photos"
    for i in range(8):
        save_image(make_photo((40 + 4 * i, 48 + 2 * i), i), photos / f"{i:02d}.jpg")
    style = save_image(make_photo((64, 80), 123), root / "style.png")
    run_dir = root / "run"
    overrides = with_validation(tiny_overrides(photos, style, run_dir, steps=5))
    overrides = [o.replace("loss.weights=random", f"loss.weights={vgg_file}") for o in overrides]
    model = train(compose(overrides), run_dir, hparams=override_settings(overrides))
    held_out = PhotoDataModule(str(photos), val_images=2).held_out
    return {"run": run_dir, "model": model, "photos": photos, "held_out": held_out}


def test_held_out_photos_are_a_fixed_choice_never_trained_on(photo_folder):
    first = PhotoDataModule(str(photo_folder), num_workers=0, val_images=3)
    again = PhotoDataModule(str(photo_folder), num_workers=0, val_images=3)
    assert first.held_out == again.held_out and len(first.held_out) == 3
    assert set(first.held_out).isdisjoint(first.dataset.files)
    assert set(first.held_out) | set(first.dataset.files) == set(list_images(photo_folder))


def test_photos_added_to_the_folder_leave_the_held_out_choice_as_it_was_or_join_it(
    photo_folder,
):
    before = set(PhotoDataModule(str(photo_folder), num_workers=0, val_images=3).held_out)
    added = {
        save_image(make_photo((40, 40), 50 + i), photo_folder / f"new{i}.png") for i in range(4)
    }
    after = set(PhotoDataModule(str(photo_folder), num_workers=0, val_images=3).held_out)
    assert after - before <= added and len(after) == 3


def test_a_val_root_is_held_out_whole_and_every_training_photo_trains(photo_folder, tmp_path):
    val = tmp_path / "val"
    for i in range(2):
        save_image(make_photo((36, 36), 70 + i), val / f"v{i}.png")
    dm = PhotoDataModule(str(photo_folder), num_workers=0, val_root=str(val), val_images=8)
    assert sorted(dm.held_out) == list_images(val)
    assert dm.dataset.files == list_images(photo_folder)


def test_the_preview_photos_are_the_held_out_ones(photo_folder):
    dm = PhotoDataModule(str(photo_folder), num_workers=0, val_images=3, preview_images=2)
    assert dm.preview_paths() == dm.held_out[:2]
    assert dm.preview_batch().shape == (2, 3, 256, 256)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"val_images": 7, "batch_size": 2},
            r"data.root=.*: 8 photos are too few to hold out data.val_images=7 and fill a "
            r"batch of data.batch_size=2",
        ),
        ({"val_root": "nowhere"}, r"data.val_root=nowhere: no such folder"),
        ({"val_root": "EMPTY"}, r"data.val_root=.*empty: no readable photo to hold out"),
        ({"val_root": "BROKEN"}, r"data.val_root=.*broken: no readable photo to hold out"),
    ],
    ids=["too-few-photos", "no-folder", "empty-folder", "unreadable-photos"],
)
def test_held_out_photos_that_cannot_be_had_stop_in_one_line(
    photo_folder, tmp_path, options, message
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a photo")
    folders = {"EMPTY": str(tmp_path / "empty"), "BROKEN": str(tmp_path / "broken")}
    if "val_root" in options:
        options = {**options, "val_root": folders.get(options["val_root"], options["val_root"])}
    with pytest.raises(NstFastError, match=message) as err:
        PhotoDataModule(str(photo_folder), num_workers=0, **{"val_images": 2, **options})
    assert "\n" not in str(err.value)


def test_the_mean_over_photos_counts_a_photo_repeated_by_the_sampler_once():
    # Columns: style, photo index, then two terms. Photo 2 of style 0 comes twice, as a
    # DistributedSampler pads the shares of 3 photos over 2 processes.
    rows = torch.tensor(
        [
            [0, 0, 1.0, 10.0],
            [0, 1, 2.0, 20.0],
            [0, 2, 6.0, 60.0],
            [0, 2, 6.0, 60.0],
            [1, 0, 4.0, 0.0],
            [1, 1, 8.0, 4.0],
        ],
        dtype=torch.float64,
    )
    means = mean_over_photos(rows, styles=2)
    assert means.tolist() == [[3.0, 30.0], [6.0, 2.0], [4.5, 16.0]]


def test_validation_logs_each_loss_term_at_its_steps_and_at_the_end(validated):
    logged = scalars(validated["run"])
    for tag in ("val/total", "val/content", "val/style", "val/style/relu2_2", "val/tv"):
        assert [step for step, _ in logged[tag]] == [2, 4, 5], tag


def test_hp_metric_is_the_validation_loss_and_never_a_placeholder(validated):
    logged = scalars(validated["run"])
    assert logged["hp_metric"] == logged["val/total"]
    row = hparams_row(validated["run"])
    assert row["metrics"] == ["hp_metric"]
    assert row["settings"]["trainer.val_check_interval"] == 2
    assert row["settings"]["data.val_size"] == 32


def test_the_best_checkpoint_is_the_step_with_the_lowest_validation_loss(validated):
    logged = scalars(validated["run"])["val/total"]
    best_step, best_loss = min(logged, key=lambda item: item[1])
    ckpt = torch.load(
        validated["run"] / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu"
    )
    assert ckpt["global_step"] == best_step
    assert ckpt["validation"]["loss"] == pytest.approx(best_loss, rel=1e-6)


def test_the_model_records_its_step_and_final_validation_loss(validated):
    _, info = load_network(validated["model"])
    final_step, final_loss = scalars(validated["run"])["val/total"][-1]
    assert info.step == final_step == 5
    assert info.extra["validation"]["step"] == 5
    assert info.extra["validation"]["loss"] == pytest.approx(final_loss, rel=1e-6)


def test_the_best_checkpoint_exports_with_its_step_and_validation_loss(validated, tmp_path):
    best = validated["run"] / "checkpoints" / "best.ckpt"
    ckpt = torch.load(best, weights_only=False, map_location="cpu")
    result = nst_fast("export", str(best), "--format", "pt", "-o", str(tmp_path / "best.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    _, info = load_network(tmp_path / "best.pt")
    assert info.step == ckpt["global_step"]
    assert info.extra["validation"] == ckpt["validation"]
    assert f"at step {ckpt['global_step']}" in result.stdout


def test_the_final_validation_loss_is_what_evaluate_measures_on_the_held_out_photos(
    validated, vgg_file, tmp_path
):
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for path in validated["held_out"]:
        shutil.copy(path, held_out / path.name)
    # Validation scores with the run's own loss, its style pyramid included; evaluate
    # takes the single full-size term unless given the run's, as a user would give it.
    trained = load_network(validated["model"])[1].extra["loss"]
    keys = ("style_scales", "style_scale_weights")
    pyramid = [f"loss.{key}={json.dumps(trained[key])}" for key in keys]
    rows = evaluate_model(
        validated["model"],
        held_out,
        tmp_path / "eval",
        size=32,
        iterations=(),
        device="cpu",
        overrides=[f"loss.weights={vgg_file}", *pyramid],
    )
    final_loss = scalars(validated["run"])["val/total"][-1][1]
    assert rows[0].means()["total"] == pytest.approx(final_loss, rel=1e-5)


def test_the_samples_are_the_held_out_photos_stylized(validated):
    samples = sorted(p.stem for p in (validated["run"] / "samples").iterdir())
    assert samples == sorted(p.stem for p in validated["held_out"])


@pytest.mark.slow
def test_a_resumed_run_validates_at_the_same_steps_with_the_same_figures(
    photo_folder, style_file, tmp_path
):
    def run(name: str, steps: int, *extra: str) -> dict:
        run_dir = tmp_path / name
        overrides = with_validation(tiny_overrides(photo_folder, style_file, run_dir, steps))
        train(compose([*overrides, *extra]), run_dir)
        return dict(scalars(run_dir)["val/total"])

    straight = run("straight", 6)
    run("interrupted", 3)
    resumed = run("interrupted", 6, "ckpt_path=last")
    assert sorted(straight) == [2, 4, 6]
    assert sorted(resumed) == [2, 3, 4, 6]  # 3: the end of the first, shorter run
    for step in (2, 4, 6):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-6), step


@pytest.mark.slow
def test_two_processes_validate_their_shares_to_the_one_process_figure(
    photo_folder, style_file, tmp_path
):
    # 3 held-out photos over 2 processes: one process's share is padded with a repeat.
    # A rate below fp32's smallest number (it rounds to no change at all) keeps the network
    # fixed, so the 1- and 2-process runs validate the same network.
    held_out = PhotoDataModule(str(photo_folder), val_images=3).held_out

    def run(name: str, *extra: str) -> dict:
        run_dir, probe = tmp_path / name, tmp_path / f"probe_{name}"
        overrides = with_validation(
            tiny_overrides(photo_folder, style_file, run_dir, steps=2), images=3
        )
        result = nst_fast(
            "train",
            *overrides,
            f"hydra.run.dir={run_dir}",
            "optim.lr=1e-46",
            "trainer.precision=32-true",
            "+callbacks.probe._target_=tests.probes.RecordRank",
            f"+callbacks.probe.folder={probe}",
            *extra,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        ranks = [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]
        return {
            "logged": dict(scalars(run_dir)["val/total"]),
            "seen": [r["seen"] for r in ranks],
            "weights": {r["weights"] for r in ranks},
        }

    one = run("one")
    two = run("two", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2")
    assert len(two["seen"]) == 2 and one["weights"] == two["weights"]  # the same network
    for photos_seen in one["seen"] + two["seen"]:
        assert photos_seen and not {str(p) for p in held_out} & set(photos_seen)
    assert sorted(one["logged"]) == sorted(two["logged"]) == [2]
    assert two["logged"][2] == pytest.approx(one["logged"][2], rel=1e-6)


@pytest.mark.slow
def test_the_runs_of_a_multirun_compare_by_validation_loss_beside_the_setting_swept(
    photo_folder, style_file, tmp_path
):
    overrides = with_validation(tiny_overrides(photo_folder, style_file, tmp_path, steps=2))
    sweep = tmp_path / "sweep"
    result = nst_fast(
        "train", "-m", "loss.style_weight=1,3", *overrides, f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/model.pt"))
    rows = [hparams_row(run) for run in runs]
    assert [row["settings"]["loss.style_weight"] for row in rows] == [1, 3]
    for run, row in zip(runs, rows, strict=True):
        assert row["metrics"] == ["hp_metric"]
        assert scalars(run)["hp_metric"] == scalars(run)["val/total"]


def test_periodic_checkpoints_are_named_by_their_own_step_not_the_last_validations(validated):
    checkpoints = sorted((validated["run"] / "checkpoints").glob("step=*.ckpt"))
    assert [p.name for p in checkpoints] == ["step=2.ckpt", "step=4.ckpt", "step=5.ckpt"]
    for path in checkpoints:
        ckpt = torch.load(path, weights_only=False, map_location="cpu")
        assert f"step={ckpt['global_step']}.ckpt" == path.name
