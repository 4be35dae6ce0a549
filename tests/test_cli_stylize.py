"""`nst-fast stylize`: names, sizes, bad files, existing outputs, alpha and options."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_fast.cli import main
from nst_fast.export import save_model
from nst_fast.images import read_image, save_image
from nst_fast.models.transformer import transformer_net
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    return save_model(net, tmp_path_factory.mktemp("model") / "model.pt", style="tiny", step=1)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    save_image(make_photo((33, 47), 0), folder / "a.jpg")
    save_image(make_photo((40, 30), 1), folder / "b.png")
    save_image(make_photo((40, 30), 2), folder / "sub" / "c.jpg")
    return folder


def stylize(*args) -> int:
    return main(["stylize", *map(str, args), "-q"])


def test_a_folder_is_stylized_recursively_keeping_names_and_sizes(model, photos, tmp_path):
    assert stylize(model, photos, "-o", tmp_path / "out") == 0
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        out = Image.open(tmp_path / "out" / name)
        assert out.size == Image.open(photos / name).size


def test_a_single_photo_can_be_written_to_a_named_file(model, photos, tmp_path):
    assert stylize(model, photos / "a.jpg", "-o", tmp_path / "x.png") == 0
    assert Image.open(tmp_path / "x.png").size == (47, 33)


def test_globs_are_expanded(model, photos, tmp_path):
    assert stylize(model, f"{photos}/**/*.jpg", "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "c.jpg"]


def test_a_bad_file_is_named_the_others_processed_and_the_exit_is_non_zero(
    model, photos, tmp_path, capsys
):
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = (photos / "b.png").read_bytes()
    (photos / "truncated.png").write_bytes(good[: len(good) // 2])
    assert stylize(model, photos, "-o", tmp_path / "out") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 2
    assert any("broken.jpg" in e for e in errors) and any("truncated.png" in e for e in errors)
    assert {p.name for p in (tmp_path / "out").rglob("*.*")} == {"a.jpg", "b.png", "c.jpg"}


def test_existing_outputs_are_kept_unless_overwrite(model, photos, tmp_path, capsys):
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.jpg").write_bytes(b"mine")
    assert stylize(model, photos / "a.jpg", "-o", out) == 0
    assert (out / "a.jpg").read_bytes() == b"mine"
    assert "--overwrite" in capsys.readouterr().err
    assert stylize(model, photos / "a.jpg", "-o", out, "--overwrite") == 0
    assert Image.open(out / "a.jpg").size == (47, 33)


def test_size_and_scale_resize_before_stylizing(model, photos, tmp_path):
    assert stylize(model, photos / "a.jpg", "-o", tmp_path / "s", "--size", 24) == 0
    assert max(Image.open(tmp_path / "s" / "a.jpg").size) == 24
    assert stylize(model, photos / "b.png", "-o", tmp_path / "t", "--scale", 0.5) == 0
    assert Image.open(tmp_path / "t" / "b.png").size == (15, 20)


def test_alpha_grayscale_palette_and_16_bit_images_are_stylized(model, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rgba = Image.new("RGBA", (30, 20), (200, 100, 50, 128))
    rgba.save(folder / "rgba.png")
    rgba.convert("P").save(folder / "palette.gif")
    Image.new("L", (30, 20), 90).save(folder / "gray.jpg")
    Image.new("I;16", (30, 20), 40000).save(folder / "deep.png")
    Image.new("CMYK", (30, 20), (10, 20, 30, 40)).save(folder / "cmyk.jpg")
    assert stylize(model, folder, "-o", tmp_path / "out") == 0
    out = Image.open(tmp_path / "out" / "rgba.png")
    assert out.mode == "RGBA" and out.getchannel("A").getextrema() == (128, 128)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "rgba.png", "palette.png", "gray.jpg", "deep.png", "cmyk.jpg"
    }  # fmt: skip


def test_exif_orientation_is_respected(model, tmp_path):
    image = Image.new("RGB", (40, 24), (120, 60, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert stylize(model, tmp_path / "rotated.jpg", "-o", tmp_path / "out") == 0
    assert Image.open(tmp_path / "out" / "rotated.jpg").size == (24, 40)


def test_strength_zero_gives_back_the_photo(model, photos, tmp_path):
    assert stylize(model, photos / "b.png", "-o", tmp_path / "o", "--strength", 0) == 0
    assert torch.allclose(read_image(tmp_path / "o" / "b.png"), read_image(photos / "b.png"))


def test_forced_tiles_give_the_size_of_the_input(model, photos, tmp_path):
    save_image(make_photo((150, 130), 3), photos / "big.png")
    args = ("-o", tmp_path / "o", "--tile", 64, "--tile-overlap", 16, "--preserve-color")
    assert stylize(model, photos / "big.png", *args) == 0
    assert Image.open(tmp_path / "o" / "big.png").size == (130, 150)


@pytest.mark.parametrize(
    ("option", "message"),
    [(["--strength", "2"], "--strength"), (["--tile", "7"], "--tile"),
     (["--scale", "nan"], "--scale nan"), (["--scale", "inf"], "--scale inf"),
     (["--precision", "fp16", "--device", "cpu"], "--precision")],
)  # fmt: skip
def test_bad_options_give_one_line_naming_the_option(model, photos, tmp_path, capsys, option,
                                                     message):  # fmt: skip
    assert stylize(model, photos, "-o", tmp_path / "o", *option) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nst-fast stylize: error:") and message in err and "\n" not in err


def test_a_foreign_model_file_is_refused_clearly(photos, tmp_path, capsys):
    fake = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, fake)
    assert stylize(fake, photos, "-o", tmp_path / "o") == 2
    assert "not an nst-fast model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_images_of_a_few_pixels_and_animated_gifs_are_stylized(model, tmp_path):
    folder = tmp_path / "odd"
    save_image(make_photo((1, 1), 0), folder / "dot.png")
    save_image(make_photo((3, 40), 1), folder / "line.png")
    frames = [Image.new("RGB", (20, 12), colour) for colour in ("red", "blue", "green")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    assert stylize(model, folder, "-o", tmp_path / "out") == 0
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert sizes == {"dot.png": (1, 1), "line.png": (40, 3), "anim.png": (20, 12)}


def test_a_photo_is_never_written_over_even_with_overwrite(model, photos, capsys):
    before = (photos / "a.jpg").read_bytes()
    assert stylize(model, photos / "a.jpg", "-o", photos / "a.jpg", "--overwrite") == 2
    assert stylize(model, photos, "-o", photos, "--overwrite") == 2
    assert "its output would be written over it; choose another -o" in capsys.readouterr().err
    assert (photos / "a.jpg").read_bytes() == before


def test_an_output_folder_inside_the_input_folder_is_not_stylized_again(model, photos):
    out = photos / "stylized"
    assert stylize(model, photos, "-o", out) == 0
    assert stylize(model, photos, "-o", out, "--overwrite") == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == [
        "a.jpg", "b.png", "sub/c.jpg"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("empty/", "empty: no images in this folder (.jpg"),
        ("empty/*.png", "empty/*.png: no images or videos match the pattern"),
        ("nothing.jpg", "nothing.jpg: no such file, folder, or files matching the pattern"),
    ],
)
def test_an_input_naming_no_image_says_why(model, tmp_path, capsys, given, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a photo")
    assert stylize(model, tmp_path / given, "-o", tmp_path / "out") == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"),
    [("two.jpg", "two.jpg: 2 inputs need an output folder"), ("afile", "afile: is a file")],
)
def test_several_inputs_need_an_output_folder(model, photos, tmp_path, capsys, output, message):
    (tmp_path / "afile").write_text("")
    args = (photos / "a.jpg", photos / "b.png", "-o", tmp_path / output)
    assert stylize(model, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "two.jpg").exists()


def test_a_folder_of_one_photo_can_be_written_to_a_named_file(model, tmp_path):
    save_image(make_photo((20, 28), 4), tmp_path / "one" / "p.png")
    assert stylize(model, tmp_path / "one", "-o", tmp_path / "p_styled.jpg") == 0
    assert Image.open(tmp_path / "p_styled.jpg").size == (28, 20)


def test_an_unwritable_output_is_one_line_naming_it(model, photos, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert stylize(model, photos / "a.jpg", "-o", tmp_path / "afile" / "x.jpg") == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.endswith(f"afile/x.jpg: cannot write (File exists: {tmp_path / 'afile'})")


def test_a_bad_memory_budget_in_the_environment_is_named(
    model, photos, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("NST_FAST_MAX_PIXELS", "lots")
    assert stylize(model, photos, "-o", tmp_path / "o") == 2
    assert "NST_FAST_MAX_PIXELS=lots: expected a number of pixels" in capsys.readouterr().err
