"""Where a photo is stylized and in which style: masks, per-pixel style weights in the
conditional norms (regions of one photo in different styles), and their options."""

import re
from pathlib import Path

import pytest
import torch

from nst_fast.batch import stylize_paths
from nst_fast.colour import Finish
from nst_fast.errors import NstFastError
from nst_fast.export import load_network, save_model
from nst_fast.fast.norm import FastConditionalInstanceNorm
from nst_fast.formats import export_torchscript
from nst_fast.images import read_image, save_image
from nst_fast.inference import stylize, stylize_large
from nst_fast.models.transformer import ConditionalInstanceNorm2d
from nst_fast.prepared import forward, prepare
from nst_fast.regions import StyleMapped, style_map, with_style_map
from nst_fast.tiling import Stylizer

from .conftest import make_photo
from .test_transformer import multi_style_net

ONE_HOT = (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))


@pytest.fixture(scope="module")
def net():
    return multi_style_net(2).eval()


def halves(h: int, w: int, soft: int = 0) -> torch.Tensor:
    """A (2, h, w) style map: the first style left, the second right, ramped over ``soft``
    px around the middle."""
    x = torch.arange(w, dtype=torch.float32)
    right = ((x - (w / 2 - soft / 2)) / max(soft, 1)).clamp(0, 1) if soft else (x >= w / 2).float()
    right = right.expand(h, w)
    return torch.stack([1 - right, right])


def test_a_constant_style_map_gives_the_blend_of_those_weights(net):
    photo = make_photo((37, 50), 0)
    weights = torch.tensor([0.3, 0.7])
    constant = weights[:, None, None].expand(2, 37, 50)
    blend = stylize(net, photo, half=False, style=weights)
    for fast in (False, True):
        mapped = stylize(net, photo, half=False, fast=fast, style=constant)
        torch.testing.assert_close(mapped, blend, rtol=0, atol=1e-5)


def test_the_fast_conditional_norm_equals_the_plain_one_with_a_style_map_in_value_and_gradient():
    torch.manual_seed(0)
    plain = ConditionalInstanceNorm2d(6, 3)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-0.5, 0.5)
    fast = FastConditionalInstanceNorm(plain)
    x = torch.randn(2, 6, 8, 12, requires_grad=True)
    style = torch.rand(2, 3, 16, 24)  # the image's map, twice the layer's size
    grads = []
    for norm in (plain, fast):
        x.grad = plain.weight.grad = plain.bias.grad = None
        out = norm(x.contiguous(memory_format=torch.channels_last), style)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), x.grad.clone(), plain.weight.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_two_regions_match_each_styles_own_output_away_from_their_border(net):
    photo = make_photo((64, 160), 1)
    first, second = (stylize(net, photo, half=False, style=w) for w in ONE_HOT)
    regions = stylize(net, photo, half=False, style=halves(64, 160))
    # Instance-norm statistics are the whole photo's, so not equal (on this untrained
    # network they move every pixel a lot): each side far closer to its own style.
    for side, own, other in ((slice(0, 40), first, second), (slice(120, 160), second, first)):
        assert (regions - own)[..., side].abs().mean() < 0.6 * (regions - other)[
            ..., side
        ].abs().mean()


@pytest.mark.parametrize("fast", [True, False])
def test_tiled_and_untiled_regions_agree_as_they_do_for_one_style(net, fast):
    photo = make_photo((230, 270), 3)
    batch = with_style_map(photo[None], halves(230, 270, soft=60))
    ready = prepare(StyleMapped(net), "cpu", torch.float32, fast=fast)
    whole = forward(ready, batch)
    tiled = Stylizer(lambda b: forward(ready, b), 10**9, ready, tile=160, overlap=96)(batch)
    assert tiled.shape == whole.shape == (1, 3, 230, 270)
    assert (tiled - whole).abs().max() < 2e-3


def test_stylize_large_tiles_a_photo_with_its_style_map(net):
    photo = make_photo((230, 270), 4)
    style = halves(230, 270, soft=60)
    whole = stylize(net, photo, half=False, style=style)
    tiled = stylize_large(net, photo, half=False, tile=160, overlap=96, style=style)
    assert (tiled - whole).abs().max() < 2e-3


def test_a_style_map_of_another_size_than_the_photo_is_a_value_error(net):
    with pytest.raises(ValueError, match="style map"):
        stylize(net, make_photo((32, 32), 0), half=False, style=torch.rand(2, 16, 16))


def test_the_mask_blends_the_finished_output_with_the_photo_pixel_by_pixel():
    content, stylized = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    finish = Finish(strength=1.0)
    assert torch.equal(finish(stylized, content, torch.ones(1, 1, 8, 8)), stylized)
    assert torch.equal(finish(stylized, content, torch.zeros(1, 1, 8, 8)), content)
    half = Finish(strength=0.5)
    torch.testing.assert_close(
        half(stylized, content, torch.ones(1, 1, 8, 8)), half(stylized, content)
    )


def test_style_map_weights_add_up_to_one_and_the_rest_region_takes_what_masks_leave():
    sky = torch.zeros(1, 4, 4)
    sky[:, :2] = 1.0
    sky[:, 2] = 0.25
    weights, coverage = style_map([(0, sky), (1, None)], styles=2)
    assert torch.equal(weights[0], sky[0]) and torch.equal(weights[1], 1 - sky[0])
    assert torch.equal(coverage, torch.ones(1, 4, 4))
    alone, covered = style_map([(1, sky)], styles=3)
    assert torch.equal(covered, sky)  # no rest region: uncovered pixels keep the photo
    assert torch.equal(alone[1, :3], torch.ones(3, 4)) and torch.allclose(
        alone[:, 3], torch.full((3, 4), 1 / 3)
    )


# Files: model.pt, masks, photos, through stylize_paths and the command line.


@pytest.fixture(scope="module")
def files(tmp_path_factory, net) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regions")
    multi = save_model(net, root / "multi.pt", style="a+b", step=1, styles=["a", "b"])
    one = save_model(
        multi_style_net(2).single_style(ONE_HOT[0]), root / "one.pt", style="a", step=1
    )
    photos = root / "photos"
    save_image(make_photo((48, 64), 5), photos / "p.png")
    save_image(make_photo((48, 64), 6), photos / "trip" / "q.png")
    masks = root / "masks"
    left = torch.zeros(3, 48, 64)  # the photos' size: a hard edge at the middle
    left[..., :32] = 1.0
    save_image(left, masks / "p.png")
    save_image(1 - left, masks / "trip" / "q.png")
    save_image(left, root / "left.png")
    save_image(torch.ones(3, 12, 16), root / "white.png")
    save_image(torch.zeros(3, 12, 16), root / "black.png")
    save_image(torch.ones(3, 16, 16), root / "square.png")
    (root / "broken.png").write_bytes(b"not an image")
    return {"root": root, "multi": multi, "one": one, "photos": photos, "masks": masks}


def run(files, tmp_path, model="one", **options) -> tuple[Path, object]:
    out = tmp_path / "out"
    report = stylize_paths(files[model], [files["photos"]], out, ext="png", device="cpu",
                           precision="fp32", **options)  # fmt: skip
    return out, report


def test_an_all_white_mask_gives_todays_output_exactly(files, tmp_path):
    plain, _ = run(files, tmp_path / "a")
    masked, _ = run(files, tmp_path / "b", mask=files["root"] / "white.png")
    for name in ("p.png", "trip/q.png"):
        assert torch.equal(read_image(masked / name), read_image(plain / name))


def test_a_mask_keeps_the_photo_where_black_and_stylizes_where_white(files, tmp_path):
    plain, _ = run(files, tmp_path / "a")
    masked, report = run(files, tmp_path / "b", mask=files["root"] / "left.png")
    assert report.failed == 0
    out, photo = read_image(masked / "p.png"), read_image(files["photos"] / "p.png")
    stylized = read_image(plain / "p.png")
    assert torch.equal(out[..., 34:], photo[..., 34:])  # black: the photo itself
    assert torch.equal(out[..., :30], stylized[..., :30])  # white: the stylization


def test_a_folder_of_masks_gives_each_photo_the_mask_of_its_name(files, tmp_path):
    masked, _ = run(files, tmp_path, mask=files["masks"])
    q, photo_q = (
        read_image(masked / "trip" / "q.png"),
        read_image(files["photos"] / "trip" / "q.png"),
    )
    assert torch.equal(q[..., :30], photo_q[..., :30])  # its mask is black on the left
    p, photo_p = read_image(masked / "p.png"), read_image(files["photos"] / "p.png")
    assert torch.equal(p[..., 34:], photo_p[..., 34:])


def test_regions_stylize_files_as_the_python_call_with_their_style_map(files, net, tmp_path):
    mixed, report = run(files, tmp_path, model="multi", regions=f"b={files['masks']},a")
    assert report.failed == 0
    for name, left_is_b in (("p.png", True), ("trip/q.png", False)):
        photo = read_image(files["photos"] / name)
        b = halves(48, 64)[0 if left_is_b else 1]
        expected = stylize(net, photo, half=False, style=torch.stack([1 - b, b]))
        torch.testing.assert_close(read_image(mixed / name), expected, atol=1 / 255, rtol=0)


def test_a_region_without_a_rest_keeps_the_photo_outside_its_mask(files, tmp_path):
    out, _ = run(files, tmp_path, model="multi", regions=f"b={files['root'] / 'left.png'}")
    photo = read_image(files["photos"] / "p.png")
    assert torch.equal(read_image(out / "p.png")[..., 34:], photo[..., 34:])


def test_regions_in_a_batch_give_what_they_give_one_by_one(files, tmp_path):
    spec = f"a={files['masks']},b"
    one, _ = run(files, tmp_path / "one", model="multi", regions=spec, batch_size=1)
    two, _ = run(files, tmp_path / "two", model="multi", regions=spec, batch_size=2)
    for name in ("p.png", "trip/q.png"):
        torch.testing.assert_close(
            read_image(two / name), read_image(one / name), atol=1 / 255, rtol=0
        )


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("one", {"mask": "nowhere.png"}, "mask=.*no such mask file or folder"),
        ("one", {"mask": "broken.png"}, r"broken.png: not a readable image"),
        ("one", {"mask": "black.png"}, "black.png is all black: nothing would be stylized"),
        ("one", {"mask": "square.png"}, "has another shape; masks are scaled, not stretched"),
        ("one", {"regions": "a=left.png"}, "this model has one style, a; mask stylizes a part"),
        ("multi", {"regions": "c=left.png,b"}, "no style 'c'; the model has a, b"),
        ("multi", {"regions": "a"}, "give a style a mask"),
        ("multi", {"regions": "a,b"}, "only one style can take the rest"),
        ("multi", {"regions": "a=left.png", "style": "a"}, "regions and style: give one"),
        ("multi", {"regions": "a=nowhere.png,b"}, "nowhere.png: no such mask file or folder"),
        ("multi", {"regions": "a=empty/,b"}, "has no mask for p.png"),
    ],
)
def test_a_mask_or_regions_that_cannot_work_are_one_line_and_nothing_is_written(
    files, tmp_path, model, options, message, monkeypatch
):
    monkeypatch.chdir(files["root"])
    (files["root"] / "empty").mkdir(exist_ok=True)
    with pytest.raises(NstFastError, match=message) as caught:
        run(files, tmp_path, model=model, **options)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_regions_with_an_exported_file_say_to_use_the_model_pt(files, tmp_path):
    exported = export_torchscript(*load_network(files["multi"]), tmp_path / "multi.ts")
    message = re.escape("per-pixel styles need the model.pt")
    with pytest.raises(NstFastError, match=message):
        stylize_paths(exported, [files["photos"]], tmp_path / "out", device="cpu",
                      regions=f"a={files['root'] / 'left.png'},b")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_command_line_takes_mask_and_regions(files, tmp_path):
    from .conftest import nst_fast

    left = files["root"] / "left.png"
    result = nst_fast("stylize", str(files["multi"]), str(files["photos"] / "p.png"),
                      "-o", str(tmp_path / "r.png"), "--regions", f"a={left},b", "--mask",
                      str(files["root"] / "white.png"), "--precision", "fp32")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "r.png").shape == (3, 48, 64)
    bad = nst_fast("stylize", str(files["one"]), str(files["photos"]), "-o", str(tmp_path / "x"),
                   "--mask", str(files["root"] / "square.png"))  # fmt: skip
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "square.png" in bad.stderr and "has another shape" in bad.stderr


def test_one_mask_serves_every_frame_of_a_video(files, tmp_path):
    pytest.importorskip("av")
    from nst_fast.video import read_frames

    from .test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=4, size=(48, 64), audio=False)
    plain, masked = tmp_path / "plain.mp4", tmp_path / "masked.mp4"
    for out, options in ((plain, {}), (masked, {"mask": files["root"] / "left.png"})):
        report = stylize_paths(files["one"], [clip], out, device="cpu", **options)
        assert report.failed == 0, report.errors
    source, whole, half = (read_frames(p, 4) for p in (clip, plain, masked))
    kept, styled = slice(40, 64), slice(0, 24)  # black and white in left.png
    assert (half - source)[..., kept].abs().mean() < 0.5 * (whole - source)[..., kept].abs().mean()
    assert (half - whole)[..., styled].abs().mean() < 0.5 * (half - source)[
        ..., styled
    ].abs().mean()


def test_a_mask_of_another_shape_than_a_videos_frames_is_one_line_and_no_file(files, tmp_path):
    pytest.importorskip("av")
    from .test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=2, size=(48, 64), audio=False)
    report = stylize_paths(files["one"], [clip], tmp_path / "o.mp4", device="cpu",
                           mask=files["root"] / "square.png")  # fmt: skip
    assert len(report.errors) == 1 and "has another shape" in report.errors[0]
    assert not (tmp_path / "o.mp4").exists()


def write_mask_clip(path: Path, masks: list[float], size=(48, 64)) -> Path:
    """A video whose frames are flat grey levels (1 white, 0 black), one per frame."""
    av = pytest.importorskip("av")
    import numpy as np

    with av.open(str(path), "w") as clip:
        stream = clip.add_stream("libx264", rate=12)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}  # lossless: the grey levels come back as written
        for i, level in enumerate(masks):
            pixels = np.full((*size, 3), round(level * 255), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            clip.mux(stream.encode(frame))
        clip.mux(stream.encode(None))
    return path


def test_a_mask_video_gives_each_frame_its_own_mask(files, tmp_path):
    pytest.importorskip("av")
    from nst_fast.video import read_frames

    from .test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=4, size=(48, 64), audio=False)
    masks = write_mask_clip(tmp_path / "masks.mp4", [1, 0, 1, 0])
    plain, masked = tmp_path / "plain.mp4", tmp_path / "masked.mp4"
    for out, options in ((plain, {}), (masked, {"mask": masks})):
        report = stylize_paths(files["one"], [clip], out, device="cpu", **options)
        assert report.failed == 0, report.errors
    source, whole, half = (read_frames(p, 4) for p in (clip, plain, masked))
    for i in range(4):
        to_source = (half[i] - source[i]).abs().mean()
        to_stylized = (half[i] - whole[i]).abs().mean()
        assert (to_stylized < 0.5 * to_source) if i % 2 == 0 else (to_source < 0.5 * to_stylized)


def test_a_mask_video_shorter_than_its_clip_is_one_line_and_no_file(files, tmp_path):
    pytest.importorskip("av")
    from .test_video import write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=4, size=(48, 64), audio=False)
    masks = write_mask_clip(tmp_path / "masks.mp4", [1, 1])
    report = stylize_paths(files["one"], [clip], tmp_path / "o.mp4", device="cpu",
                           mask=masks, batch_size=1)  # fmt: skip
    assert len(report.errors) == 1 and "has fewer frames than" in report.errors[0]
    assert not (tmp_path / "o.mp4").exists()


def test_an_exported_file_takes_a_mask_as_the_model_pt_does(files, tmp_path):
    exported = export_torchscript(*load_network(files["one"]), tmp_path / "one.ts")
    mask = files["root"] / "left.png"
    outs = []
    for model in (files["one"], exported):
        out = tmp_path / model.suffix.lstrip(".")
        stylize_paths(model, [files["photos"]], out, ext="png", device="cpu",
                      precision="fp32", mask=mask)  # fmt: skip
        outs.append(read_image(out / "p.png"))
    torch.testing.assert_close(outs[1], outs[0], atol=2 / 255, rtol=0)
    photo = read_image(files["photos"] / "p.png")
    assert torch.equal(outs[1][..., 34:], photo[..., 34:])
