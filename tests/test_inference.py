"""Inference keeps sizes, tiles without seams, and preserves colour on request."""

from collections import Counter
from itertools import pairwise

import pytest
import torch
from torch import nn

from nst_fast.colour import blend, preserve_color, rgb_to_ycc
from nst_fast.fast import FastInstanceNorm
from nst_fast.inference import stylize
from nst_fast.memory import max_pixels
from nst_fast.models.transformer import transformer_net
from nst_fast.prepared import forward, prepare, prepared
from nst_fast.tiling import Stylizer, ramp, tile_starts
from tests.conftest import make_photo


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return transformer_net(channels=[8, 16, 32], residual_blocks=1).eval()


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (50, 21), (17, 18)])
def test_stylize_keeps_the_size_of_single_images_and_batches(net, size):
    image = make_photo(size, 0)
    assert stylize(net, image).shape == image.shape
    assert stylize(net, torch.stack([image, image])).shape == (2, *image.shape)


def test_stylized_values_are_an_image_in_0_1(net):
    out = stylize(net, make_photo((40, 40), 1))
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1


def test_stylize_without_the_fast_modules_gives_the_same_image(net):
    image = make_photo((45, 61), 2)
    plain = stylize(net, image, half=False, fast=False)
    torch.testing.assert_close(stylize(net, image, half=False), plain, rtol=1e-4, atol=1e-5)


def test_the_plain_preparation_runs_torchs_own_modules_but_for_the_tile_sharing_norms(net):
    plain = prepare(net, "cpu", torch.float32, fast=False)
    expected = Counter(type(m) for m in net.modules())
    expected[FastInstanceNorm] = expected.pop(nn.InstanceNorm2d)
    assert Counter(type(m) for m in plain.modules()) == expected
    norms = [m for m in plain.modules() if type(m) is FastInstanceNorm]
    assert norms and not any(norm.cpu_training_kernel for norm in norms)


def test_stylize_keeps_the_fast_and_the_plain_copy_apart(net):
    cpu = torch.device("cpu")
    fast, plain = (prepared(net, cpu, torch.float32, fast=f) for f in (True, False))
    assert fast is not plain
    assert prepared(net, cpu, torch.float32, fast=False) is plain


def test_prepare_leaves_the_given_network_untouched(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepare(net, "cpu", torch.float32)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert next(net.parameters()).is_contiguous()


def test_tiles_cover_the_image_at_multiples_of_four_and_end_flush():
    starts = tile_starts(400, 128, 32)
    assert starts[0] == 0 and starts[-1] + 128 == 400
    assert all(s % 4 == 0 for s in starts)
    assert all(b - a <= 128 - 32 for a, b in pairwise(starts))


def test_facing_blend_ramps_sum_to_one():
    falling = ramp(64, 16, rise=False, fall=True)[-16:]
    rising = ramp(64, 16, rise=True, fall=False)[:16]
    assert torch.allclose(falling + rising, torch.ones(16))


@pytest.mark.parametrize("fast", [True, False])
def test_tiled_equals_untiled_when_the_tiles_share_the_image_statistics(net, fast):
    image = make_photo((230, 270), 3)  # not a multiple of 4 on either side
    ready = prepare(net, "cpu", torch.float32, fast=fast)
    whole = forward(ready, image[None])
    # the overlap exceeds what this small network sees around a pixel (~22 px)
    run = Stylizer(lambda b: forward(ready, b), 10**9, ready, tile=160, overlap=96)
    tiled = run(image[None])
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 2e-3


def test_images_over_the_memory_budget_are_tiled_automatically(net):
    image = make_photo((120, 100), 4)[None]
    fast = prepare(net, "cpu", torch.float32)
    calls = []

    def run(batch):
        calls.append(batch.shape[-2:])
        return forward(fast, batch)

    out = Stylizer(run, max_pixels=80 * 80, net=fast, overlap=16)(image)
    assert out.shape == image.shape
    # the statistics pass on a downscaled copy, then tiles: never the whole image at once
    assert all(h * w <= 80 * 80 for h, w in calls) and len(calls) > 2


def test_preserve_color_keeps_the_content_chroma_and_the_stylized_luminance():
    # muted colours, so the recombined image stays inside the RGB cube (no clamping)
    content = 0.5 + 0.2 * (make_photo((32, 40), 5) - 0.5)
    stylized = 0.5 + 0.2 * (make_photo((32, 40), 6) - 0.5)
    out = preserve_color(stylized, content)
    ycc, content_ycc, stylized_ycc = rgb_to_ycc(out), rgb_to_ycc(content), rgb_to_ycc(stylized)
    assert torch.allclose(ycc[1:], content_ycc[1:], atol=1e-5)
    assert torch.allclose(ycc[0], stylized_ycc[0], atol=1e-5)


def test_strength_blends_between_the_photo_and_the_stylization():
    content, stylized = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert torch.equal(blend(stylized, content, 1.0), stylized)
    assert torch.equal(blend(stylized, content, 0.0), content)
    assert torch.allclose(blend(stylized, content, 0.25), torch.full((3, 4, 4), 0.25))


def test_stylize_prepares_a_network_once_until_its_weights_change():
    torch.manual_seed(0)
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1).eval()
    image = make_photo((24, 24), 4)
    first = stylize(net, image)
    assert prepared(net, torch.device("cpu"), torch.float32) is prepared(
        net, torch.device("cpu"), torch.float32
    )
    cached = prepared(net, torch.device("cpu"), torch.float32)
    with torch.no_grad():  # as an optimizer step does: in place
        net.decoder[-1][1].bias.add_(0.5)
    assert prepared(net, torch.device("cpu"), torch.float32) is not cached
    assert not torch.allclose(stylize(net, image), first)


# --- the memory budget on GPUs, faked on the CPU ----------------------------------------

GiB = 1 << 30
CHANNELS = [32, 64, 128]  # the default network's widths


def fake_gpu(monkeypatch, free: int, reserved: int = 0, allocated: int = 0) -> torch.device:
    """Make ``torch.cuda`` answer as a card with ``free`` bytes free (as the driver counts
    them) and this process's caching allocator holding ``reserved``, ``allocated`` of it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)
    monkeypatch.delenv("NST_FAST_MAX_PIXELS", raising=False)
    return torch.device("cuda")


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_pass_on_an_80_gb_gpu_keeps_its_widest_activation_under_2_31_elements(monkeypatch, dtype):
    cuda = fake_gpu(monkeypatch, free=79 * GiB)
    pixels = max_pixels(cuda, CHANNELS, dtype)
    # The plain decoder's last block upsamples 64 maps to full size: 64 elements a pixel.
    assert pixels * 64 < 2**31
    assert pixels > 6000 * 4000  # still a 24-megapixel photo in one pass


def test_a_pixel_budget_given_for_a_gpu_is_kept_under_2_31_elements_too(monkeypatch):
    cuda = fake_gpu(monkeypatch, free=79 * GiB)
    monkeypatch.setenv("NST_FAST_MAX_PIXELS", str(100_000_000))
    assert max_pixels(cuda, CHANNELS, torch.float16) * 64 < 2**31


def test_memory_held_in_pytorchs_cache_counts_as_free(monkeypatch):
    cuda = fake_gpu(monkeypatch, free=2 * GiB, reserved=7 * GiB, allocated=3 * GiB)
    with_cache = max_pixels(cuda, CHANNELS, torch.float16)
    cuda = fake_gpu(monkeypatch, free=6 * GiB)  # the same card with its cache emptied
    assert with_cache == max_pixels(cuda, CHANNELS, torch.float16)


def onnxruntime_error(kind: str, message: str) -> Exception:
    state = pytest.importorskip("onnxruntime.capi.onnxruntime_pybind11_state")
    return getattr(state, kind)(message)


OUT_OF_MEMORY = {
    "torch": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
    "torchscript": lambda: RuntimeError(
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n"
        "RuntimeError: CUDA out of memory. Tried to allocate 9.00 GiB"
    ),
    "32-bit indexing": lambda: RuntimeError(
        "Expected canUse32BitIndexMath(input) && canUse32BitIndexMath(output) to be true, "
        "but got false."
    ),
    "onnxruntime arena": lambda: onnxruntime_error(
        "RuntimeException",
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
        "running Conv node. Failed to allocate memory for requested buffer of size 9663676416",
    ),
    "onnxruntime bad_alloc": lambda: onnxruntime_error(
        "Fail", "[ONNXRuntimeError] : 1 : FAIL : bad allocation"
    ),
}


def steady_network() -> nn.Module:
    """A batch-norm network with the running statistics of one photo: it normalizes as an
    instance norm would, but the same whatever part of a photo it sees, so tiles of a
    photo add up to its untiled stylization."""
    torch.manual_seed(0)
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1, norm="batch")
    for norm in net.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = 1.0
    with torch.no_grad():
        net.train()(make_photo((96, 96), 7)[None])
    return net.eval()


@pytest.fixture(scope="module")
def steady_net():
    return steady_network()


@pytest.mark.parametrize("form", OUT_OF_MEMORY)
def test_a_pass_that_runs_out_of_memory_in_any_form_is_tiled_into_the_untiled_image(
    steady_net, form
):
    image = make_photo((420, 300), 8)
    ready = prepare(steady_net, "cpu", torch.float32)
    whole = forward(ready, image[None])
    passes = []

    def run(batch):
        if not passes:
            passes.append(None)
            raise OUT_OF_MEMORY[form]()
        passes.append(batch.shape[-2] * batch.shape[-1])
        return forward(ready, batch)

    # the overlap exceeds what this small network sees around a pixel (~22 px)
    tiled = Stylizer(run, max_pixels=10**9, net=ready, overlap=96)(image[None])
    assert all(pixels < 420 * 300 for pixels in passes[1:]) and len(passes) > 2
    assert (tiled - whole).abs().max() < 1e-4


def test_other_errors_of_a_pass_are_raised_not_tiled_around(net):
    def run(batch):
        raise RuntimeError("Given groups=1, weight of size [8, 3, 9, 9], expected input")

    with pytest.raises(RuntimeError, match="Given groups=1"):
        Stylizer(run, max_pixels=10**9, net=None)(make_photo((64, 64), 0)[None])
