"""`nst-fast optimize` and `nst-fast evaluate` on tiny images with a random-init VGG."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_fast.cli import main
from nst_fast.evaluate import column_name, grid_strength
from nst_fast.export import save_model
from nst_fast.images import read_image, save_image
from nst_fast.models.transformer import TransformerNet, default_transformer_config, transformer_net

from .conftest import FULL_SIZE_STYLE, make_photo


def load_script(name: str, folder: str = "pages"):
    path = Path(__file__).resolve().parents[1] / "scripts" / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_optimize_writes_the_stylized_photo_and_tensorboard_logs(
    photo_folder, style_file, tmp_path
):
    photo = next(photo_folder.glob("*.png"))
    out = tmp_path / "out.png"
    code = main(
        [
            "optimize",
            str(photo),
            str(style_file),
            "-o",
            str(out),
            "--size",
            "24",
            "--steps",
            "3",
            "--tensorboard",
            str(tmp_path / "tb"),
            "loss.weights=random",
            *FULL_SIZE_STYLE,
        ]
    )
    assert code == 0
    # --size is the longer side, as in stylize
    assert max(read_image(out).shape[-2:]) == 24
    assert list((tmp_path / "tb").glob("events.*"))


def test_optimize_names_a_missing_style_before_any_download(photo_folder, tmp_path, capsys):
    photo = next(photo_folder.glob("*.png"))
    code = main(["optimize", str(photo), str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o.png")])
    assert code == 2
    assert "nope.jpg: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "out.xyz"], "-o out.xyz: expected an image file"),
        (["-o", "o.png", "--size", "0"], "--size 0: expected 8 or more"),
        (["-o", "o.png", "--steps", "0"], "--steps 0: expected 1 or more"),
        (["-o", "o.png", "--lr", "-1"], "--lr -1.0: expected a positive rate"),
        (["-o", "o.png", "--log-every", "0"], "--log-every 0: expected 1 or more"),
    ],
)
def test_optimize_refuses_bad_options_before_any_work(photo_folder, capsys, options, message):
    photo = next(photo_folder.glob("*.png"))
    assert main(["optimize", str(photo), "generated:mosaic", *options]) == 2
    assert message in capsys.readouterr().err


def tiny_model_and_photos(tmp_path: Path) -> tuple[Path, Path]:
    """An untrained tiny model.pt that records a generated style, and two held-out photos."""
    photos = tmp_path / "held_out"
    for i in range(2):
        save_image(make_photo((30, 40), i), photos / f"{i}.png")
    style = save_image(make_photo((32, 32), 5), tmp_path / "style.png")
    model = tmp_path / "model.pt"
    save_model(
        transformer_net(channels=(8, 16, 32), residual_blocks=1),
        model,
        style="s",
        step=1,
        extra={"style": {"image": str(style), "size": 32}},
    )
    return model, photos


@pytest.mark.slow
def test_evaluate_writes_a_table_and_a_grid(tmp_path):
    model, photos = tiny_model_and_photos(tmp_path)
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(model),
            "--content",
            str(photos),
            "--size",
            "24",
            "--iterations",
            "2,3",
            "--init",
            "noise,content",
            "-o",
            str(out),
            "loss.weights=random",
        ]
    )
    assert code == 0
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [
        "network",
        "gatys L-BFGS 2 (noise init)",
        "gatys L-BFGS 3 (noise init)",
        "gatys L-BFGS 2 (content init)",
        "gatys L-BFGS 3 (content init)",
    ]
    assert all(float(r["style loss"]) > 0 for r in rows)
    # The default loss's four style layers, each unweighted, in their own columns.
    layers = ["style relu1_2", "style relu2_2", "style relu3_3", "style relu4_3"]
    assert all(float(r[name]) >= 0 for r in rows for name in layers)
    assert all(0 <= float(r["grid"]) <= 1 for r in rows)
    assert "| network |" in (out / "table.md").read_text()
    # Two photos, each: photo, network output, one Gatys output per start and iteration count.
    assert read_image(out / "grid.jpg").shape[-1] == 6 * (24 + 4) + 4


def test_grid_strength_finds_a_faint_period_4_grid_that_random_detail_lacks():
    g = torch.Generator().manual_seed(0)
    photo = make_photo((256, 256), 0) + 0.05 * torch.randn(3, 256, 256, generator=g)
    grid = torch.zeros(256, 256)
    grid[::4] = grid[:, ::4] = 1  # one-pixel lines every 4 pixels, as a 2x2 x 2x2 decoder draws
    # Random detail scores about period / sqrt(pixels): 4 / 256.
    assert grid_strength(photo) < 0.025
    assert grid_strength(photo + 0.02 * grid) > 0.1
    # A batch of one scores as the image does.
    assert grid_strength(photo[None]) == pytest.approx(grid_strength(photo))


def test_the_table_names_style_terms_by_scale_and_layer_with_spaces():
    assert column_name("style@1/2") == "style 1/2"
    assert column_name("style@1/4") == "style 1/4"
    assert column_name("style/relu1_2") == "style relu1_2"
    assert column_name("style@1/2/relu3_3") == "style 1/2 relu3_3"


def test_evaluate_with_iterations_none_scores_the_network_alone(tmp_path):
    model, photos = tiny_model_and_photos(tmp_path)
    out = tmp_path / "eval"
    argv = ["evaluate", str(model), "--content", str(photos), "--size", "24", "-o", str(out)]
    assert main([*argv, "--iterations", "none", "loss.weights=random"]) == 0
    with open(out / "table.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["network"]
    # Two photos, each: photo and network output.
    assert read_image(out / "grid.jpg").shape[-1] == 2 * (24 + 4) + 4


@pytest.mark.parametrize(
    "bad",
    [
        ["--iterations", "0"],
        ["--iterations", "some"],
        ["--content", "/nonexistent"],
        ["--init", "zeros"],
        ["--size", "0"],
        ["--limit", "-1"],
        ["-o", "A_FILE"],
    ],
)
def test_evaluate_refuses_bad_options(tmp_path, bad, capsys):
    (tmp_path / "a_file").write_text("")
    bad = [str(tmp_path / "a_file") if arg == "A_FILE" else arg for arg in bad]
    model = tmp_path / "model.pt"
    save_model(
        transformer_net(channels=(8, 16), residual_blocks=1),
        model,
        style="s",
        step=1,
        extra={"style": {"image": "generated:mosaic"}},
    )
    args = ["evaluate", str(model), "--content", str(tmp_path), *bad, "loss.weights=random"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("nst-fast evaluate: error:")


@pytest.mark.slow
def test_quality_report_evaluates_each_run_and_writes_a_page_with_its_grids(tmp_path):
    quality_report = load_script("quality_report").main
    photos = tmp_path / "held_out"
    save_image(make_photo((30, 40), 1), photos / "a.png")
    style = save_image(make_photo((32, 32), 5), tmp_path / "style.png")
    run = tmp_path / "runs" / "tiny_run"
    save_model(
        transformer_net(channels=(8, 16, 32), residual_blocks=1),
        run / "model.pt",
        style="tiny",
        step=7,
        extra={"style": {"image": str(style), "size": 32}},
    )
    out = tmp_path / "docs"
    argv = [str(run), "-o", str(out), "--content", str(photos), "--size", "24"]
    assert quality_report([*argv, "--iterations", "2,3", "loss.weights=random"]) == 0
    page = (out / "README.md").read_text()
    assert "| tiny_run | tiny | 7 |" in page
    assert "gatys L-BFGS 3 (noise init)" in page
    assert "![tiny_run](tiny_run/grid.jpg)" in page
    assert (out / "tiny_run" / "grid.jpg").is_file()
    # A second report reuses the finished evaluation instead of redoing minutes of L-BFGS.
    table = (out / "tiny_run" / "table.csv").read_text()
    assert quality_report([*argv, "--reuse", "loss.weights=random"]) == 0
    assert (out / "tiny_run" / "table.csv").read_text() == table


def test_quality_report_names_a_run_without_a_model(tmp_path, capsys):
    quality_report = load_script("quality_report").main
    assert quality_report([str(tmp_path), "--content", str(tmp_path)]) == 2
    assert "no model.pt" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_scores_with_the_style_settings_the_model_was_trained_with(tmp_path):
    photos = tmp_path / "held_out"
    save_image(make_photo((30, 40), 1), photos / "a.png")
    style = save_image(make_photo((32, 32), 5), tmp_path / "style.png")
    model = tmp_path / "model.pt"
    recorded = {"image": str(style), "size": 20, "style_weight": 0.0, "tv_weight": 0.0}
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    save_model(net, model, style="s", step=1, extra={"style": recorded})
    out = tmp_path / "eval"
    argv = ["evaluate", str(model), "--content", str(photos), "--size", "24", "-o", str(out)]
    # The grid penalty is a loss setting, not a per-style one: off here on the command line.
    overrides = ["loss.weights=random", "loss.grid_weight=0"]
    assert main([*argv, "--iterations", "1", *overrides]) == 0
    with open(out / "table.csv") as f:
        network = next(csv.DictReader(f))
    # Style and TV weighted 0 as recorded: the total is the content term alone.
    assert float(network["total loss"]) == pytest.approx(float(network["content loss"]))
    assert float(network["style loss"]) > 0


def test_quality_report_counts_training_time_without_pauses_or_a_resumed_stretch():
    active_minutes = load_script("quality_report").active_minutes
    # 60 s per 10 steps; paused 30 minutes after step 20; killed after step 40 and
    # resumed from the step-30 checkpoint, logging steps 30-40 again.
    points = [(0, 0), (10, 60), (20, 120), (30, 1920), (40, 1980)]
    points += [(30, 2100), (40, 2160), (50, 2220)]
    # Counted: 0-40 at 60 s per 10 steps (the pause at the median rate), the restart
    # 40 -> 30 not at all, then 30-50 again: 60 steps' worth, 6 minutes.
    assert active_minutes(points) == pytest.approx(6.0)
    assert active_minutes([(5, 10.0)]) is None


def test_the_rate_warms_up_linearly_then_follows_the_schedule_over_max_steps():
    from nst_fast.training.module import rate_factor

    assert [rate_factor(s, 4, "constant", 10) for s in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    assert rate_factor(0, 0, "constant", 10) == 1.0
    assert rate_factor(5, 4, "cosine", 10) == pytest.approx(0.5)
    assert rate_factor(1, 4, "cosine", 10) == pytest.approx(0.5 * (0.5 + 0.5 * 0.9510565))
    assert rate_factor(10, 4, "cosine", 10) == pytest.approx(0.0)


@pytest.mark.slow
def test_video_report_tables_each_model_with_and_without_steady_statistics_and_draws_them(
    tmp_path,
):
    video_report = load_script("video_report").main
    photos = tmp_path / "held_out"
    save_image(make_photo((40, 40), 1), photos / "a.png")
    style = save_image(make_photo((32, 32), 5), tmp_path / "style.png")
    model = tmp_path / "model.pt"
    recorded = {"image": str(style), "size": 32}
    stability = {"temporal_weight": 1000.0, "noise_weight": 0.0, "start_step": 4,
                 "ramp_steps": 2}  # fmt: skip
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    save_model(net, model, style="s", step=9, extra={"style": recorded, "stability": stability})
    out = tmp_path / "page"
    argv = ["tiny=" + str(model), "--content", str(photos), "--size", "32", "-o", str(out)]
    assert video_report([*argv, "loss.weights=random"]) == 0
    page = (out / "README.md").read_text()
    terms = "temporal 1000 from step 4, ramped over 2"
    assert f"| tiny | 9 | plain | {terms} | per frame |" in page
    assert f"| tiny | 9 | plain | {terms} | steady statistics (0.9) |" in page
    assert "| content loss | style loss | style 1/2 | style 1/4 | total loss |" in page
    assert "![tiny, per frame](strip_tiny_per_frame.jpg)" in page
    assert (out / "strip_tiny_steady.jpg").is_file()
    with Image.open(out / "pan.gif") as gif:
        assert gif.n_frames == load_script("video_report").GIF_FRAMES


def test_video_report_refuses_an_entry_without_a_name(tmp_path, capsys):
    video_report = load_script("video_report").main
    assert video_report([str(tmp_path / "model.pt"), "--content", str(tmp_path)]) == 2
    assert "expected NAME=MODEL" in capsys.readouterr().err


@pytest.mark.slow
def test_multistyle_report_rows_each_style_of_each_model_against_its_one_style_network(
    tmp_path,
):
    multistyle_report = load_script("multistyle_report").main
    photos = tmp_path / "held_out"
    save_image(make_photo((40, 40), 1), photos / "a.png")
    styles = [save_image(make_photo((32, 32), 5 + i), tmp_path / f"s{i}.png") for i in (0, 1)]
    specs = [{"name": f"s{i}", "image": str(styles[i]), "size": 32} for i in (0, 1)]
    torch.manual_seed(0)
    two = TransformerNet(default_transformer_config(channels=[8, 16, 32], residual_blocks=1), 2)
    save_model(two, tmp_path / "two.pt", style="s0+s1", step=20, extra={"style": specs},
               styles=["s0", "s1"])  # fmt: skip
    one = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    save_model(one, tmp_path / "one.pt", style="s0", step=10, extra={"style": specs[0]})
    out = tmp_path / "page"
    models = [f"2-style={tmp_path / 'two.pt'}", f"one-style={tmp_path / 'one.pt'}"]
    argv = [*models, "--content", str(photos), "--size", "32", "-o", str(out)]
    assert multistyle_report([*argv, "loss.weights=random"]) == 0
    page = (out / "README.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith(("| s0 ", "| s1 "))]
    assert [row.split(" | ")[:4] for row in rows] == [
        ["| s0", "2-style", "2", "20"],
        ["| s0", "one-style", "1", "10"],
        ["| s1", "2-style", "2", "20"],
    ]
    # The 2-style row of s0 is set against s0's one-style network; s1 has none to set it by.
    assert rows[0].rstrip(" |").rsplit(" | ", 1)[1].endswith("%")
    assert rows[2].rstrip(" |").endswith("-")
    assert (out / "s0.jpg").is_file() and (out / "s1.jpg").is_file()


@pytest.mark.slow
def test_the_report_sets_models_of_one_style_against_the_first_with_the_coarse_style_terms(
    tmp_path,
):
    multistyle_report = load_script("multistyle_report").main
    photos = tmp_path / "held_out"
    save_image(make_photo((64, 64), 1), photos / "a.png")
    spec = {"name": "s", "image": str(save_image(make_photo((64, 64), 5), tmp_path / "s.png"))}
    for seed, name in enumerate(("default", "pyramid")):
        torch.manual_seed(seed)
        net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
        save_model(net, tmp_path / f"{name}.pt", style="s", step=10, extra={"style": spec})
    out = tmp_path / "page"
    models = [f"{name}={tmp_path / name}.pt" for name in ("default", "pyramid")]
    argv = [*models, "--content", str(photos), "--size", "64", "-o", str(out)]
    argv += ["--against", "first", "--title", "The style pyramid", "loss.weights=random"]
    assert multistyle_report(argv) == 0
    page = (out / "README.md").read_text().splitlines()
    assert page[0] == "# The style pyramid"
    header = next(line for line in page if line.startswith("| style |"))
    assert "| style 1/2 | style 1/4 |" in header and header.endswith("total against first |")
    default, pyramid = [line.split(" | ") for line in page if line.startswith("| s |")]
    assert default[1] == "default" and default[-1] == "- |"
    assert pyramid[1] == "pyramid" and pyramid[-1].endswith("% |")
    assert all(float(cell) > 0 for cell in (*default[6:8], *pyramid[6:8]))


def test_multistyle_report_refuses_a_model_given_twice(tmp_path, capsys):
    multistyle_report = load_script("multistyle_report").main
    model = tmp_path / "model.pt"
    save_model(transformer_net(channels=(8, 16, 32), residual_blocks=1), model, style="s", step=1)
    argv = [f"a={model}", f"b={model}", "--content", str(tmp_path)]
    assert multistyle_report(argv) == 2
    assert "given twice; give each model once" in capsys.readouterr().err


@pytest.mark.slow
def test_control_report_shows_a_mask_regions_against_pasting_and_each_stroke_method(tmp_path):
    control_report = load_script("control_report").main
    photos = tmp_path / "held_out"
    for i in range(2):
        save_image(make_photo((96, 96), i), photos / f"{i}.png")
    style = save_image(make_photo((64, 64), 5), tmp_path / "style.png")
    recorded = {"image": str(style), "size": 64}
    torch.manual_seed(0)
    one = save_model(transformer_net(channels=(8, 16, 32), residual_blocks=1),
                     tmp_path / "one.pt", style="s", step=3, extra={"style": recorded})  # fmt: skip
    config = default_transformer_config(channels=[8, 16, 32], residual_blocks=1)
    two = save_model(TransformerNet(config, styles=2), tmp_path / "two.pt", style="a+b",
                     step=3, styles=["a", "b"])  # fmt: skip
    out = tmp_path / "page"
    argv = ["--model", str(one), "--two-styles", str(two), "--sizes-model", str(two),
            "--sizes", "a=0.5,b=2", "--content", str(photos), "--size", "96", "--limit", "2",
            "--show", "1", "-o", str(out), "loss.weights=random"]  # fmt: skip
    assert control_report(argv) == 0
    page = (out / "README.md").read_text()
    for heading in ("## Where: a mask", "## Where: two styles, two regions", "## How big"):
        assert heading in page
    rows = [line.split(" | ")[:2] for line in page.splitlines() if line.startswith("| ")]
    for method, stroke in (("resample", "0.5"), ("resample", "2"), ("detail", "2"),
                           ("sizes network", "0.5"), ("sizes network", "2")):  # fmt: skip
        assert [f"| {method}", stroke] in rows
    assert any(row[0] == "| hard" for row in rows) and any(row[0] == "| soft" for row in rows)
    for name in ("mask", "regions", "border", "strokes_1"):
        assert (out / f"{name}.jpg").is_file()
