"""Several styles in one network (Dumoulin et al. 2017): the styles list, training one
network on all of them, its model files, and blending its styles."""

import re
import subprocess
from pathlib import Path

import pytest
import torch

from nst_fast.batch import stylize_paths
from nst_fast.config import compose, resolve_styles
from nst_fast.errors import NstFastError
from nst_fast.export import load_network
from nst_fast.inference import stylize
from nst_fast.training.extend import with_added_styles
from nst_fast.training.module import StyleTransferModule

from .conftest import FULL_SIZE_STYLE, make_photo, nst_fast, tiny_overrides
from .test_transformer import multi_style_net, small_net


@pytest.fixture(scope="module")
def two_styles(tmp_path_factory) -> tuple[Path, list[Path], subprocess.CompletedProcess]:
    """One tiny run of a network of two styles, shared by the tests below."""
    from nst_fast.images import save_image

    root = tmp_path_factory.mktemp("multistyle")
    photos = root / "photos"
    for i in range(6):
        save_image(make_photo((36 + 2 * i, 44), i), photos / f"{i}.jpg")
    styles = [
        save_image(make_photo((48, 48), 99), root / "warm.png"),
        save_image(make_photo((40, 56), 7).flip(0), root / "cool.png"),
    ]
    run_dir = root / "run"
    overrides = [
        o for o in tiny_overrides(photos, styles[0], run_dir, steps=6) if "style." not in o
    ]
    # A high rate: six steps move each style's norms far enough to tell the styles apart.
    # In fp32 on every CPU: at this rate under bf16 autocast (a CPU with native bf16) the
    # tiny network's output goes flat within six steps, and no style could be told apart.
    styles_list = f"styles=[{styles[0]},{styles[1]}]"
    fp32 = "trainer.precision=32-true"
    result = nst_fast("train", styles_list, "style.size=48", "optim.lr=1e-2", fp32, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, styles, result


@pytest.mark.slow
def test_the_model_of_a_two_style_run_keeps_both_styles_in_order(two_styles):
    run_dir, *_ = two_styles
    net, info = load_network(run_dir / "model.pt")
    assert info.styles == ["warm", "cool"] and info.style == "warm+cool"
    assert net.styles == 2
    _, from_checkpoint = load_network(run_dir / "checkpoints" / "last.ckpt")
    assert from_checkpoint.styles == ["warm", "cool"]


@pytest.mark.slow
def test_each_style_of_the_trained_network_and_their_blend_give_different_images(two_styles):
    run_dir, *_ = two_styles
    net, _ = load_network(run_dir / "model.pt")
    photo = make_photo((40, 48), 3)
    warm, cool, half = (
        stylize(net.single_style(torch.tensor(w)), photo, half=False)
        for w in ([1.0, 0.0], [0.0, 1.0], [0.5, 0.5])
    )
    assert (warm - cool).abs().mean() > 1e-3
    assert (half - warm).abs().mean() > 1e-4 and (half - cool).abs().mean() > 1e-4


@pytest.mark.slow
def test_a_two_style_run_logs_each_styles_loss_and_samples_under_each_style(two_styles):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, *_ = two_styles
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/total", "loss_by_style/warm", "loss_by_style/cool"} <= scalars
    assert {"style/warm", "style/cool", "preview"} <= set(acc.Tags()["images"])
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["cool", "warm"]
    assert len(list((run_dir / "samples" / "warm").glob("*.jpg"))) == 2


@pytest.mark.slow
def test_resuming_a_two_style_checkpoint_with_other_styles_is_refused_in_one_line(
    two_styles, tmp_path
):
    run_dir, styles, _ = two_styles
    swapped = compose(
        [
            f"styles=[{styles[1]},{styles[0]}]",
            "loss.weights=random",
            "model.channels=[8,16,32]",
            "model.residual_blocks=1",
        ]
    )
    module = StyleTransferModule.from_config(swapped)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    with pytest.raises(NstFastError, match=r"trained on warm, cool \(in that order\)"):
        module.on_load_checkpoint(checkpoint)


def test_a_style_config_name_brings_its_own_image_size_and_a_path_is_named_by_its_stem():
    wave, mine = resolve_styles(["wave", "/photos/my painting.jpg"], size=300)
    assert wave["name"] == "wave" and wave["image"].startswith("https://") and wave["size"] == 512
    assert mine == {"name": "my painting", "image": "/photos/my painting.jpg", "size": 300}


@pytest.mark.parametrize(
    ("entries", "message"),
    [([], "styles=[]: name the styles"), (["a/x.jpg", "b/x.png"], "x is named twice")],
)
def test_an_empty_or_repeating_styles_list_is_one_line(entries, message):
    with pytest.raises(NstFastError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_styles(entries, size=256)


def test_a_styles_list_of_one_trains_a_network_of_one_style(style_file):
    cfg = compose([f"styles=[{style_file}]", "loss.weights=random", "model.residual_blocks=1"])
    module = StyleTransferModule.from_config(cfg)
    assert module.transformer.styles == 1
    assert [s["name"] for s in module.styles] == [style_file.stem]


def test_each_training_step_trains_the_next_style_in_turn(style_file, tmp_path):
    from nst_fast.images import save_image

    other = save_image(make_photo((40, 40), 5), tmp_path / "other.png")
    cfg = compose(
        [
            f"styles=[{style_file},{other}]",
            "style.size=32",
            "loss.weights=random",
            *FULL_SIZE_STYLE,
            "model.channels=[8,16,32]",
            "model.residual_blocks=1",
            "fast=false",
        ]
    )
    module = StyleTransferModule.from_config(cfg)
    module.on_fit_start()
    photos = make_photo((32, 32), 1)[None]
    norm = module.transformer.encoder[0][2]
    for step in range(2):
        module.transformer.zero_grad()
        output = module.transformer(photos, module.style_weights(step))
        module.criteria[step](output, photos)["total"].backward()
        trained = norm.weight.grad.abs().sum(1) > 0
        assert trained.tolist() == [step == 0, step == 1]


@pytest.mark.slow
def test_stylize_writes_one_output_per_style_named_with_it_or_one_for_a_choice(
    two_styles, tmp_path
):
    from nst_fast.images import read_image, save_image

    run_dir, *_ = two_styles
    photo = save_image(make_photo((40, 48), 3), tmp_path / "photo.png")
    result = nst_fast("stylize", str(run_dir / "model.pt"), str(photo), "-o", str(tmp_path / "all"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "photo_cool.png",
        "photo_warm.png",
    ]
    for choice, name in (("warm", "one.png"), ("warm=1,cool=3", "blend.png")):
        report = stylize_paths(run_dir / "model.pt", [photo], tmp_path / name, style=choice)
        assert report.written == [tmp_path / name]
    warm, cool = (read_image(tmp_path / "all" / f"photo_{s}.png") for s in ("warm", "cool"))
    assert torch.equal(read_image(tmp_path / "one.png"), warm)
    blend = read_image(tmp_path / "blend.png")
    assert not torch.equal(blend, warm) and not torch.equal(blend, cool)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("wave", "style='wave': no style 'wave'; the model has warm, cool"),
        ("warm=0,cool=0", "the weights add up to 0"),
        ("warm=-1,cool=2", "style weights are 0 or more"),
    ],
)
def test_a_style_choice_the_model_cannot_make_is_one_line(two_styles, tmp_path, choice, message):
    run_dir, *_ = two_styles
    photo = make_photo((32, 32), 1)
    from nst_fast.images import save_image

    path = save_image(photo, tmp_path / "p.png")
    with pytest.raises(NstFastError, match=re.escape(message)):
        stylize_paths(run_dir / "model.pt", [path], tmp_path / "out", style=choice)
    assert not (tmp_path / "out").exists()


def test_a_model_of_one_style_takes_no_other_style_name(tmp_path):
    from nst_fast.export import save_model
    from nst_fast.images import save_image
    from nst_fast.models.transformer import transformer_net

    model = save_model(
        transformer_net(channels=[4, 8], residual_blocks=1), tmp_path / "m.pt", style="wave", step=1
    )
    path = save_image(make_photo((32, 32), 1), tmp_path / "p.png")
    with pytest.raises(NstFastError, match="this model has one style, wave"):
        stylize_paths(model, [path], tmp_path / "out", style="mosaic")
    assert stylize_paths(model, [path], tmp_path / "out", style="wave").written


@pytest.mark.slow
def test_adding_a_style_trains_only_its_norms_and_keeps_every_other_weight_bit_identical(
    two_styles, tmp_path
):
    from nst_fast.images import save_image

    run_dir, *_ = two_styles
    photos = tmp_path / "photos"
    for i in range(4):
        save_image(make_photo((36, 40), 20 + i), photos / f"{i}.jpg")
    new = save_image(make_photo((48, 48), 42), tmp_path / "green.png")
    overrides = tiny_overrides(photos, new, tmp_path / "run", steps=3)
    overrides = [o for o in overrides if not o.startswith("style.name")] + ["style.name=green"]
    result = nst_fast("train", f"extend={run_dir / 'model.pt'}", "optim.lr=1e-2", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    base, _ = load_network(run_dir / "model.pt")
    grown, info = load_network(tmp_path / "run" / "model.pt")
    assert info.styles == ["warm", "cool", "green"]
    before, after = base.state_dict(), grown.state_dict()
    norms = {k for k in after if after[k].dim() == 2}  # the conditional norms' (styles, C)
    assert norms
    for key, value in before.items():
        assert torch.equal(after[key][:2] if key in norms else after[key], value), key
    assert any(not torch.equal(after[k][2], before[k].mean(0)) for k in norms)


def test_a_style_the_extended_model_has_already_is_one_line(tmp_path):
    from nst_fast.export import save_model
    from nst_fast.models.transformer import transformer_net
    from nst_fast.training.extend import extended

    net = transformer_net(channels=[4, 8], residual_blocks=1)
    model = save_model(net, tmp_path / "m.pt", style="wave", step=1)
    with pytest.raises(NstFastError, match="it has the style wave already"):
        extended(str(model), [{"name": "wave", "image": "x.jpg"}])
    arch, styles = extended(str(model), [{"name": "new", "image": "x.jpg"}])
    assert arch["channels"] == [4, 8] and [s["name"] for s in styles] == ["wave", "new"]


@pytest.mark.slow
def test_evaluate_reports_a_row_per_style_each_against_its_own_loss(two_styles, tmp_path):
    import csv

    from nst_fast.cli import main

    run_dir, *_ = two_styles
    held_out = tmp_path / "held_out"
    for i in range(2):
        from nst_fast.images import save_image

        save_image(make_photo((30, 40), 50 + i), held_out / f"{i}.png")
    out = tmp_path / "eval"
    argv = ["evaluate", str(run_dir / "model.pt"), "--content", str(held_out), "--size", "24"]
    assert main([*argv, "-o", str(out), "--iterations", "none", "loss.weights=random"]) == 0
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["warm", "cool"]
    assert rows[0]["style loss"] != rows[1]["style loss"]  # each against its own targets
    assert (out / "warm" / "grid.jpg").is_file() and (out / "cool" / "table.md").is_file()


def test_an_added_style_starts_as_the_equal_blend_of_the_styles_a_network_has():
    net = multi_style_net(2).eval()
    grown = with_added_styles(net, 1).eval()
    x = torch.rand(1, 3, 24, 20)
    torch.testing.assert_close(
        grown(x, torch.tensor([1.0, 0.0, 0.0])), net(x, torch.tensor([1.0, 0.0]))
    )
    torch.testing.assert_close(
        grown(x, torch.tensor([0.0, 0.0, 1.0])), net(x, torch.tensor([0.5, 0.5]))
    )


def test_a_network_of_one_style_grows_into_a_network_of_several():
    net = small_net().eval()
    grown = with_added_styles(net, 2).eval()
    assert grown.styles == 3
    x = torch.rand(1, 3, 24, 20)
    torch.testing.assert_close(grown(x, torch.tensor([1.0, 0.0, 0.0])), net(x))


def test_extending_a_model_keeps_its_recorded_style_settings_under_its_name(tmp_path):
    from nst_fast.export import save_model
    from nst_fast.models.transformer import transformer_net
    from nst_fast.training.extend import extended

    net = transformer_net(channels=[4, 8], residual_blocks=1)
    recorded = {"image": "wave.jpg", "size": 32}  # as model files of one style record it
    model = save_model(net, tmp_path / "m.pt", style="wave", step=1, extra={"style": recorded})
    _, styles = extended(str(model), [{"name": "new", "image": "x.jpg"}])
    assert styles[0] == {"image": "wave.jpg", "size": 32, "name": "wave"}
