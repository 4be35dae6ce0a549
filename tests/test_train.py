"""End to end: `nst-fast train` writes checkpoints, TensorBoard events and model.pt."""

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_fast.export import load_model

from .conftest import ckpt_step, nst_fast, tiny_overrides

pytestmark = pytest.mark.slow


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    return acc


def training_error(overrides: list[str]) -> str:
    """The one-line error ``nst-fast train OVERRIDES`` stops with (its CLI prints this
    message and exits 2: test_a_new_run_is_not_written_over_an_earlier_one), in-process:
    the same config and entry point without a Python start-up per case."""
    from nst_fast.config import compose
    from nst_fast.errors import NstFastError
    from nst_fast.training.train import train

    with pytest.raises(NstFastError) as err:
        run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
        train(compose(overrides), run_dir)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path, subprocess.CompletedProcess]:
    """One tiny training run, shared by the tests below (it costs seconds, not minutes)."""
    from nst_fast.images import save_image

    from .conftest import make_photo

    root = tmp_path_factory.mktemp("train")
    photos = root / "photos"
    for i in range(6):
        save_image(make_photo((36 + 2 * i, 44), i), photos / f"{i}.jpg")
    style = save_image(make_photo((48, 48), 99), root / "style.png")
    run_dir = root / "run"
    result = nst_fast("train", *tiny_overrides(photos, style, run_dir, steps=4))
    assert result.returncode == 0, result.stderr[-3000:]
    return photos, style, run_dir, result


def test_run_directory_holds_config_checkpoints_events_and_model(trained):
    _, _, run_dir, result = trained
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step=2.ckpt",
        "step=4.ckpt",
    ]
    assert (run_dir / "model.pt").is_file()
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["0.jpg", "1.jpg"]
    assert str(run_dir / "model.pt") in result.stdout + result.stderr


def test_a_run_prints_no_library_notices(trained):
    *_, result = trained
    output = result.stdout + result.stderr
    assert "💡" not in output and "deprecated" not in output and "eval mode" not in output
    assert "done: 4 steps" in output


def test_samples_of_photos_with_one_name_in_two_folders_are_both_kept(trained, tmp_path):
    from nst_fast.images import save_image

    from .conftest import make_photo

    _, style, _, _ = trained
    photos = tmp_path / "photos"
    save_image(make_photo((36, 40), 0), photos / "a" / "x.jpg")
    save_image(make_photo((40, 36), 1), photos / "b" / "x.png")
    run_dir = tmp_path / "run"
    result = nst_fast("train", *tiny_overrides(photos, style, run_dir, steps=1))
    assert result.returncode == 0, result.stderr[-3000:]
    samples = sorted(p.relative_to(run_dir / "samples").as_posix() for p in run_dir.rglob("x.jpg"))
    assert samples == ["a/x.jpg", "b/x.jpg"]


def test_events_hold_loss_scalars_and_image_grids(trained):
    acc = events(trained[2])
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/total", "loss/content", "loss/style", "loss/tv"} <= scalars
    assert {"loss/style/relu1_2", "loss/style/relu4_3"} <= scalars  # each style layer
    assert len(acc.Scalars("loss/total")) == 4
    assert {"style", "preview"} <= set(acc.Tags()["images"])
    # A grid at the start, every 2 steps and at the end: steps 0, 2, 4.
    assert [e.step for e in acc.Images("preview")] == [0, 2, 4]
    assert [e.value for e in acc.Scalars("lr-Adam")] == pytest.approx([1e-3] * 4)


def test_cosine_schedule_decays_the_learning_rate_to_zero_over_max_steps(trained, tmp_path):
    photos, style, _, _ = trained
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(photos, style, run_dir, steps=4), "optim.schedule=cosine"]
    result = nst_fast("train", *overrides, "optim.lr=0.002")
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = [e.value for e in events(run_dir).Scalars("lr-Adam")]
    assert lrs[0] == pytest.approx(0.002)
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.002 * 0.2


def test_warmup_raises_the_learning_rate_linearly_and_a_resumed_run_goes_on_from_its_step(
    trained, tmp_path
):
    photos, style, _, _ = trained
    run_dir = tmp_path / "run"
    warmup = ["optim.warmup_steps=4", "optim.lr=0.002"]
    assert (
        nst_fast("train", *tiny_overrides(photos, style, run_dir, steps=2), *warmup).returncode == 0
    )
    further = [*tiny_overrides(photos, style, run_dir, steps=6), *warmup, "ckpt_path=last"]
    result = nst_fast("train", *further)
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = {e.step: e.value for e in events(run_dir).Scalars("lr-Adam")}
    assert [lrs[step] for step in range(6)] == pytest.approx(
        [0.0005, 0.001, 0.0015, 0.002, 0.002, 0.002]
    )


def test_a_cosine_run_trained_further_decays_to_zero_at_its_new_max_steps(trained, tmp_path):
    photos, style, _, _ = trained
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(photos, style, run_dir, steps=4), "optim.schedule=cosine"]
    assert nst_fast("train", *overrides).returncode == 0
    further = [*tiny_overrides(photos, style, run_dir, steps=8), "optim.schedule=cosine"]
    result = nst_fast("train", *further, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    lrs = {e.step: e.value for e in events(run_dir).Scalars("lr-Adam")}
    resumed = [lrs[step] for step in range(4, 8)]
    assert resumed[0] == pytest.approx(0.5e-3)  # halfway through the cosine over 8 steps
    assert resumed == sorted(resumed, reverse=True) and resumed[-1] < 1e-3 * 0.05


def test_cpu_trains_in_bf16_mixed_precision(trained, tmp_path):
    photos, style, _, _ = trained
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides(photos, style, run_dir, steps=2), "trainer.precision=bf16-mixed"]
    result = nst_fast("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [e.value for e in events(run_dir).Scalars("loss/total")]
    assert losses and all(0 < v < float("inf") for v in losses)
    net, _ = load_model(run_dir / "model.pt")
    assert next(net.parameters()).dtype == torch.float32  # mixed: the weights stay fp32


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.schedule=step", "optim.schedule=step: expected one of constant, cosine"),
        ("model.output=sigmoid", "model.output='sigmoid': expected one of"),
    ],
)
def test_unknown_choices_stop_with_one_line_naming_the_option(trained, tmp_path, override, message):
    photos, style, _, _ = trained
    assert message in training_error([*tiny_overrides(photos, style, tmp_path / "run"), override])


def test_exported_model_loads_without_hydra_and_stylizes(trained):
    net, info = load_model(trained[2] / "model.pt")
    assert info.style == "tiny" and info.step == 4
    assert info.extra["loss"]["content_layer"] == "relu2_2"
    assert info.extra["style"]["image"].endswith("style.png")
    assert info.arch == {
        "channels": [8, 16, 32],
        "residual_blocks": 1,
        "norm": "instance",
        "output": "tanh",
        "norm_scope": "residual",
        "antialias": False,
        "antialias_taps": 3,
    }
    assert net(torch.rand(1, 3, 21, 19)).shape == (1, 3, 21, 19)
    payload = torch.load(trained[2] / "model.pt", weights_only=True)
    assert not any(k.startswith("criterion") for k in payload["state_dict"])


def test_checkpoints_leave_the_frozen_loss_network_out(trained):
    ckpt = torch.load(trained[2] / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert not any(k.startswith("criterion.") for k in ckpt["state_dict"])
    assert any(k.startswith("transformer.") for k in ckpt["state_dict"])


def test_resume_continues_the_step_count(trained):
    photos, style, run_dir, _ = trained
    result = nst_fast("train", *tiny_overrides(photos, style, run_dir, steps=6), "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    _, info = load_model(run_dir / "model.pt")
    assert info.step == 6
    steps = [e.step for e in events(run_dir).Scalars("loss/total")]
    assert steps[-1] == 5 and 4 in steps


def resume_a_copy(trained, tmp_path: Path, *extra: str) -> tuple[Path, subprocess.CompletedProcess]:
    """Resume a copy of the shared run to step 8 with ``extra`` overrides."""
    photos, style, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    overrides = tiny_overrides(photos, style, copy, steps=8)
    return copy, nst_fast("train", *overrides, "ckpt_path=last", *extra)


def test_a_resumed_run_trains_at_the_learning_rate_it_is_given(trained, tmp_path):
    resumed, result = resume_a_copy(trained, tmp_path, "optim.lr=1e-5")
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 1e-5


def test_a_run_ending_between_periodic_checkpoints_saves_its_last_step(trained, tmp_path):
    photos, style, _, _ = trained

    def checkpoints(run_dir: Path) -> list[str]:
        return sorted(p.name for p in (run_dir / "checkpoints").iterdir())

    # Checkpoints every 2 steps, the run ends at step 3: resuming later must start at 3.
    first = tmp_path / "first"
    assert nst_fast("train", *tiny_overrides(photos, style, first, steps=3)).returncode == 0
    assert checkpoints(first) == ["last.ckpt", "step=2.ckpt", "step=3.ckpt"]
    assert ckpt_step(first / "checkpoints" / "last.ckpt") == 3
    # Resumed in a moved run directory: last.ckpt is overwritten, no last-v1.ckpt beside it
    # (ckpt_path=last would go on finding the old one).
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    result = nst_fast("train", *tiny_overrides(photos, style, moved, steps=5), "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoints(moved) == [
        "last.ckpt",
        "step=2.ckpt",
        "step=3.ckpt",
        "step=4.ckpt",
        "step=5.ckpt",
    ]
    assert ckpt_step(moved / "checkpoints" / "last.ckpt") == 5


def test_a_failure_at_the_end_of_a_run_keeps_its_final_checkpoint(trained, tmp_path):
    photos, style, _, _ = trained
    run_dir = tmp_path / "run"
    (run_dir / "model.pt").mkdir(parents=True)  # the export at the end cannot write
    result = nst_fast("train", *tiny_overrides(photos, style, run_dir, steps=3))
    assert result.returncode == 2
    assert "model.pt: cannot write the model" in result.stderr
    assert "Traceback" not in result.stderr
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == 3


def test_resuming_into_a_different_network_is_refused_with_the_setting_to_add(trained, tmp_path):
    _, result = resume_a_copy(trained, tmp_path, "model.output=linear")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "trained with model.output=tanh; add that to the command" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_trains_each_style_into_its_own_directory(trained, tmp_path):
    photos, style, _, _ = trained
    other = tmp_path / "other.png"
    other.write_bytes(style.read_bytes())
    overrides = [
        o
        for o in tiny_overrides(photos, style, tmp_path / "unused", steps=2)
        if not o.startswith(("style.", "hydra.run"))
    ]
    result = nst_fast(
        "train",
        "-m",
        f"style.image={style},{other}",
        *overrides,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    models = sorted((tmp_path / "sweep").glob("*/model.pt"))
    assert [p.parent.name for p in models] == ["0_starry_night", "1_starry_night"]


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (
            "optim.lr=1e-3,fast",
            "configuration: Error merging override optim.lr=fast"
            " (Value 'fast' of type 'str' could not be converted to Float)",
        ),
        ("style.image=STYLE,missing.jpg", "style.image=missing.jpg: no such file"),
    ],
)
def test_a_bad_value_in_a_multirun_stops_before_the_first_job_trains(
    trained, tmp_path, sweep, message
):
    photos, style, _, _ = trained
    overrides = [o for o in tiny_overrides(photos, style, tmp_path / "x") if o[:6] != "hydra."]
    sweep_dir = tmp_path / "sweep"
    result = nst_fast(
        "train",
        "-m",
        *overrides,
        sweep.replace("STYLE", str(style)),
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"nst-fast train: error: {message}")
    assert not sweep_dir.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_steps=0", "trainer.max_steps=0: expected 1 or more"),
        ("optim.lr=-1", "optim.lr=-1.0: expected a positive rate"),
        ("optim.warmup_steps=-5", "optim.warmup_steps=-5: expected 0 or more"),
        ("style.size=0", "style.size=0: expected 16 pixels or more"),
        ("+trainer.nosuch=1", "trainer: Trainer.__init__() got an unexpected keyword argument"),
        ("ckpt_path=nowhere.ckpt", "ckpt_path=nowhere.ckpt: no such checkpoint file"),
        ("ckpt_path=MODEL", "model.pt: not a training checkpoint"),
    ],
)
def test_settings_lightning_would_fail_on_stop_in_one_line(trained, tmp_path, override, message):
    photos, style, run_dir, _ = trained
    override = override.replace("MODEL", str(run_dir / "model.pt"))
    assert message in training_error([*tiny_overrides(photos, style, tmp_path / "run"), override])


def overrides_on(trainer: str, photos: Path, style: Path, run_dir: Path) -> list[str]:
    return [
        o if o != "trainer=cpu" else f"trainer={trainer}"
        for o in tiny_overrides(photos, style, run_dir)
    ]


@pytest.mark.parametrize("trainer", ["gpu", "auto", "ddp"])
def test_deterministic_training_on_a_gpu_stops_before_it_starts_saying_to_ask_for_warnings(
    monkeypatch, photo_folder, style_file, tmp_path, trainer
):
    # Lightning's deterministic=True makes CUDA's first backward through reflection padding
    # raise; nothing of that can be seen on a CPU, so only the GPU's presence is faked.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    overrides = overrides_on(trainer, photo_folder, style_file, tmp_path / "run")
    message = training_error([*overrides, "+trainer.deterministic=true"])
    assert message.startswith("trainer.deterministic=true: ")
    assert "reflection padding" in message and "trainer.deterministic=warn" in message
    # cuDNN autotuning (trainer=gpu's benchmark: true) would pick algorithms regardless
    assert ("trainer.benchmark=false" in message) == (trainer == "gpu")


@pytest.mark.parametrize(
    ("trainer", "deterministic", "cuda"),
    [("gpu", "warn", True), ("cpu", "true", True), ("auto", "true", False), ("gpu", "false", True)],
)
def test_deterministic_training_is_left_to_lightning_where_it_can_run(
    monkeypatch, photo_folder, style_file, tmp_path, trainer, deterministic, cuda
):
    from nst_fast.config import compose
    from nst_fast.training.train import check_run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    overrides = overrides_on(trainer, photo_folder, style_file, tmp_path / "run")
    check_run(compose([*overrides, f"+trainer.deterministic={deterministic}"]), tmp_path / "run")


def test_a_new_run_is_not_written_over_an_earlier_one(trained, tmp_path):
    photos, style, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)

    def outputs() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in [*copy.glob("checkpoints/*"), copy / "model.pt"]}

    before = outputs()
    result = nst_fast("train", *tiny_overrides(photos, style, copy, steps=2))
    assert result.returncode == 2
    assert "holds an earlier run's checkpoints: resume it with ckpt_path=last" in result.stderr
    assert outputs() == before


def test_missing_style_image_stops_with_one_line(trained, tmp_path):
    photos, _, _, _ = trained
    error = training_error(tiny_overrides(photos, tmp_path / "missing.jpg", tmp_path / "run"))
    assert "style.image=" in error and "missing.jpg: no such file" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_data_folder_stops_with_one_line(trained, tmp_path):
    _, style, _, _ = trained
    (tmp_path / "empty").mkdir()
    error = training_error(tiny_overrides(tmp_path / "empty", style, tmp_path / "run"))
    assert "empty: no JPEG/PNG images" in error


def test_unknown_loss_layer_stops_with_the_valid_names(trained, tmp_path):
    photos, style, _, _ = trained
    overrides = [*tiny_overrides(photos, style, tmp_path / "run"), "loss.content_layer=relu7_1"]
    error = training_error(overrides)
    assert "unknown loss layer relu7_1 for vgg16" in error and "relu2_2" in error


def test_a_checkpoint_exports_to_the_model_of_its_step_and_stylizes(trained, tmp_path, capsys):
    from nst_fast.cli import main

    photos, _, run_dir, _ = trained
    checkpoint, target = run_dir / "checkpoints" / "step=4.ckpt", tmp_path / "step4.pt"
    assert main(["export", str(checkpoint), "--format", "pt", "-o", str(target)]) == 0
    assert "style tiny, step 4" in capsys.readouterr().out
    (net, info), (_, final_info) = load_model(target), load_model(run_dir / "model.pt")
    assert (info.style, info.step) == ("tiny", 4)
    assert (info.arch, info.extra) == (final_info.arch, final_info.extra)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name, value in net.state_dict().items():
        assert torch.equal(state[f"transformer.{name}"], value), name
    # stylize reads checkpoints directly too
    out = tmp_path / "out"
    assert main(["stylize", str(checkpoint), str(photos / "0.jpg"), "-o", str(out), "-q"]) == 0
    assert (out / "0.jpg").is_file()


def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    from nst_fast.cli import main

    bogus = tmp_path / "step=1.ckpt"
    torch.save({"state_dict": {}}, bogus)
    assert main(["export", str(bogus), "--format", "pt"]) == 2
    err = capsys.readouterr().err
    assert "not an nst-fast training checkpoint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "layer",
    [
        # every ReLU of the last upsampling layer off: the output is the output layer's bias
        "decoder.1.2.bias",
        # the output layer's tanh saturated: white everywhere
        "decoder.2.1.bias",
    ],
)
def test_a_network_whose_output_goes_flat_stops_with_one_line_at_the_tenth_flat_step(
    trained, tmp_path, layer
):
    from nst_fast.export import save_model
    from nst_fast.models.transformer import transformer_net

    photos, style, _, _ = trained
    # The run's architecture as Adam's first steps can leave it.
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1)
    with torch.no_grad():
        net.get_parameter(layer).fill_(-1e3 if layer.startswith("decoder.1") else 1e3)
    dead = save_model(net, tmp_path / "dead.pt", style="tiny", step=0)
    overrides = [*tiny_overrides(photos, style, tmp_path / "run", steps=30), f"model.init={dead}"]
    error = training_error(overrides)
    assert "output has been one flat colour for 10 steps (step 10)" in error
    assert "a longer optim.warmup_steps (now 0, e.g. 500)" in error
    assert "seed=" in error and "model.norm_scope=all" in error


@pytest.mark.parametrize(
    ("spreads", "stops"),
    [
        ([0.0] * 3, True),  # three flat batches in a row
        ([0.0, 0.0, 0.3, 0.0, 0.0], False),  # a photo with contrast in between starts over
        ([1e-3] * 3, False),  # low contrast is not one colour
    ],
)
def test_flat_output_stop_counts_flat_batches_in_a_row(spreads, stops):
    import pytorch_lightning as pl

    from nst_fast.errors import FlatOutputError
    from nst_fast.training.callbacks import FlatOutputStop

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    stop = FlatOutputStop(patience=3)
    module = SimpleNamespace(hparams={"warmup_steps": 100})
    raised = False
    for spread in spreads:
        outputs = {"loss": torch.tensor(1.0), "output_spread": torch.tensor(spread)}
        try:
            stop.on_train_batch_end(trainer, module, outputs, None, 0)
        except FlatOutputError:
            raised = True
    assert raised == stops


def test_a_flat_output_with_the_stability_terms_on_names_their_schedule():
    import pytorch_lightning as pl

    from nst_fast.errors import FlatOutputError
    from nst_fast.losses.stability import StabilitySchedule
    from nst_fast.training.callbacks import FlatOutputStop

    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    stability = SimpleNamespace(schedule=StabilitySchedule(start=50, ramp=0))
    module = SimpleNamespace(hparams={"warmup_steps": 100}, stability=stability)
    outputs = {"loss": torch.tensor(1.0), "output_spread": torch.tensor(0.0)}
    stop = FlatOutputStop(patience=1)
    with pytest.raises(FlatOutputError) as caught:
        stop.on_train_batch_end(trainer, module, outputs, None, 0)
    message = str(caught.value)
    assert "stability terms are on: start them later (stability.start_step, now 50" in message
    assert "stability.ramp_steps" in message and "\n" not in message


def samples_of(photos: list[Path], net: torch.nn.Module) -> tuple[SimpleNamespace, ...]:
    """A trainer and module, as StylizeSamples sees them, of a one-style ``net``."""
    datamodule = SimpleNamespace(preview_paths=lambda: photos, sample_name=lambda p: p.name)
    module = SimpleNamespace(
        transformer=SimpleNamespace(each_style=lambda: [net]),
        styles=[{"name": "one"}],
        device=torch.device("cpu"),
    )
    return SimpleNamespace(datamodule=datamodule), module


def test_samples_too_large_for_one_pass_are_stylized_in_tiles_as_nst_fast_stylize_does(
    tmp_path, monkeypatch
):
    from nst_fast import inference
    from nst_fast.images import read_image, save_image
    from nst_fast.training.callbacks import StylizeSamples

    from .conftest import make_photo
    from .test_inference import steady_network

    monkeypatch.setenv("NST_FAST_CPU_BF16", "0")  # compared in fp32
    net = steady_network()
    photo = save_image(make_photo((600, 520), 3), tmp_path / "photos" / "p.png")
    untiled = inference.stylize(net, read_image(photo))
    monkeypatch.setenv("NST_FAST_MAX_PIXELS", "4096")
    passes = []
    forward = inference.forward

    def counted(ready, batch):
        passes.append(batch.shape[-2] * batch.shape[-1])
        return forward(ready, batch)

    monkeypatch.setattr(inference, "forward", counted)
    StylizeSamples(tmp_path / "samples").on_train_end(*samples_of([photo], net))
    assert passes and max(passes) < 600 * 520  # never the whole photo at once
    sample = read_image(tmp_path / "samples" / "p.png")
    assert (sample - untiled).abs().max() <= 1 / 255  # within the PNG's 8-bit rounding


def test_a_sample_out_of_memory_even_in_tiles_is_left_out_and_the_others_written(
    tmp_path, monkeypatch, caplog
):
    from nst_fast.images import save_image
    from nst_fast.models.transformer import transformer_net
    from nst_fast.training import callbacks

    from .conftest import make_photo

    photos = [save_image(make_photo((40, 36 + i), i), tmp_path / f"{i}.png") for i in (0, 4)]
    stylize_large = callbacks.stylize_large

    def full_gpu_for_the_first(net, photo):
        if photo.shape[-1] == 36:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return stylize_large(net, photo)

    monkeypatch.setattr(callbacks, "stylize_large", full_gpu_for_the_first)
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1)
    callbacks.StylizeSamples(tmp_path / "samples").on_train_end(*samples_of(photos, net))
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["4.png"]
    assert "sample left out" in caplog.text and "0.png" in caplog.text
