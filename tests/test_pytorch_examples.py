"""pytorch/examples' fast_neural_style files (saved_models/*.pth): read by every command as
a model.pt is, to the example's own pixels, and a start for training (``model.init``).

The reference is the example itself, imported read-only from ``../shared/peers`` (its
tests skip where that is absent): its network, its state-dict files, its ``eval`` path.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from nst_fast.cli import main
from nst_fast.config import compose
from nst_fast.errors import NstFastError
from nst_fast.export import load_network, save_model
from nst_fast.formats import SUFFIXES, write_model
from nst_fast.images import save_image
from nst_fast.model_loading import load_for_inference
from nst_fast.models.transformer import TransformerConfig, TransformerNet
from nst_fast.training.module import StyleTransferModule
from tests.conftest import FULL_SIZE_STYLE, SHARED, make_photo

PEERS = SHARED / "peers"
CPU = torch.device("cpu")
# The example's architecture as nst-fast's settings.
AS_EXAMPLE = ["model.norm_scope=all", "model.output=linear"]


@pytest.fixture(scope="module")
def example() -> SimpleNamespace:
    """The example's network module and helpers, as its own code defines them."""
    if not (PEERS / "pytorch_examples_fast_neural_style" / "transformer_net.py").is_file():
        pytest.skip("../shared/peers/pytorch_examples_fast_neural_style is not here")
    sys.path.insert(0, str(PEERS))
    try:
        package = "pytorch_examples_fast_neural_style"
        net = importlib.import_module(f"{package}.transformer_net")
        utils = importlib.import_module(f"{package}.utils")
    finally:
        sys.path.remove(str(PEERS))
    return SimpleNamespace(TransformerNet=net.TransformerNet, save_image=utils.save_image)


@pytest.fixture(scope="module")
def trained(example) -> torch.nn.Module:
    """The example's network with weights unlike a fresh one's: every instance norm has
    its own scale and shift, and the output spans most of 0-255."""
    torch.manual_seed(29)
    net = example.TransformerNet().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
        net.deconv3.conv2d.weight.mul_(50)
        net.deconv3.conv2d.bias.add_(120)
    return net


def example_file(net: torch.nn.Module, path: Path, kind: str = "state dict") -> Path:
    """``net`` saved as the example saves it (``torch.save(net.state_dict(), ...)``), by
    today's PyTorch or by one before 0.4 (instance norms kept running statistics) and 1.6
    (a bare pickle, not a zip archive)."""
    state = net.state_dict()
    if kind == "old":
        for name, module in net.named_modules():
            if isinstance(module, torch.nn.InstanceNorm2d):
                state[f"{name}.running_mean"] = torch.randn(module.num_features)
                state[f"{name}.running_var"] = torch.rand(module.num_features) + 0.5
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path, _use_new_zipfile_serialization=kind != "old")
    return path


def examples_eval(example, model: Path, photo: Path, output: Path) -> None:
    """What ``neural_style.py eval --model MODEL --content-image PHOTO`` writes."""
    from torchvision import transforms

    image = transforms.Compose([transforms.ToTensor(), transforms.Lambda(lambda x: x.mul(255))])(
        Image.open(photo).convert("RGB")
    )
    state = torch.load(model)
    for key in list(state):
        if re.search(r"in\d+\.running_(mean|var)$", key):
            del state[key]
    net = example.TransformerNet()
    net.load_state_dict(state)
    with torch.no_grad():
        out = net.eval()(image.unsqueeze(0))
    example.save_image(str(output), out[0])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.mark.slow  # the example's full-size network, end to end
@pytest.mark.parametrize("kind", ["state dict", "old"])
def test_an_example_file_stylizes_in_fp32_as_the_examples_own_eval_to_a_grey_level(
    example, trained, tmp_path, kind
):
    model = example_file(trained, tmp_path / "saved_models" / "candy.pth", kind)
    got, expected = stylized_beside_examples_eval(example, model, tmp_path, "fp32")
    # The example truncates to uint8 where nst-fast rounds: one grey level apart at most.
    assert np.abs(got - expected).max() <= 1


@pytest.mark.slow  # the example's full-size network, end to end
def test_an_example_file_stylizes_within_the_tolerance_of_the_precision_auto_picks(
    example, trained, tmp_path, cpu_bf16
):
    model = example_file(trained, tmp_path / "saved_models" / "candy.pth")
    got, expected = stylized_beside_examples_eval(example, model, tmp_path, "auto")
    difference = np.abs(got - expected)
    if cpu_bf16:
        # bf16 keeps 8 bits of each activation; this network's output layer is scaled
        # 50x (``trained``), so its rounding shows more than a trained network's does.
        assert difference.max() <= 8
        assert difference.mean() <= 1
    else:  # fp32, as the example
        assert difference.max() <= 1


def stylized_beside_examples_eval(
    example, model: Path, tmp_path: Path, precision: str
) -> tuple[np.ndarray, np.ndarray]:
    """``nst-fast stylize --precision PRECISION`` of a photo, and the example's own eval."""
    photo = save_image(make_photo((48, 64), 3), tmp_path / "photo.png")
    examples_eval(example, model, photo, tmp_path / "expected.png")
    out = tmp_path / "out.png"
    assert (
        main(["stylize", str(model), str(photo), "-o", str(out), "-q", "--precision", precision])
        == 0
    )
    expected = pixels(tmp_path / "expected.png")
    assert expected.std() > 20  # a picture, not a flat clamp
    return pixels(out), expected


@pytest.mark.slow  # the example's full-size network, end to end
def test_an_example_file_is_known_by_its_keys_and_takes_every_stylize_option(trained, tmp_path):
    model = example_file(trained, tmp_path / "weights.bin")
    for i in range(2):
        save_image(make_photo((48, 64), i), tmp_path / "photos" / f"{i}.png")
    out = tmp_path / "out"
    options = ["--preserve-color", "--strength", "0.5", "--precision", "bf16", "--batch-size", "2"]
    assert (
        main(["stylize", str(model), str(tmp_path / "photos"), "-o", str(out), "-q", *options]) == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]


@pytest.mark.slow  # the example's full-size network, end to end
@pytest.mark.parametrize("fmt", ["pt", "onnx", "torchscript"])
def test_an_example_file_exports_to_each_format_with_the_examples_pixels(trained, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = example_file(trained, tmp_path / "mosaic.pth")
    target = tmp_path / f"mosaic{SUFFIXES.get(fmt, '.pt')}"
    if fmt == "pt":
        assert main(["export", str(model), "--format", fmt, "-o", str(target)]) == 0
    else:  # what the command does, without its check on larger images
        write_model(*load_network(model), target, fmt)
    loaded = load_for_inference(target, CPU, torch.float32)
    x = torch.rand(2, 3, 36, 44)
    with torch.no_grad():
        expected = (trained(x * 255) / 255).clamp(0, 1)
    torch.testing.assert_close(loaded.run(x), expected, atol=2e-5, rtol=0)
    assert loaded.style == "mosaic"
    if fmt == "pt":
        _, info = load_network(target)
        assert info.extra["origin"]["file"] == "mosaic.pth"
        assert "pytorch/examples" in info.extra["origin"]["format"]


# --- model.init: training starts from the given network ---------------------------------


def nst_fast_network(tmp_path: Path) -> tuple[TransformerNet, dict]:
    """A seeded network of the example's architecture in nst-fast's own layout."""
    torch.manual_seed(3)
    config = TransformerConfig([32, 64, 128], 5, "instance", "linear", "all", False, 3)
    net = TransformerNet(config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net, config.to_dict()


def init_file(kind: str, tmp_path: Path, request) -> tuple[Path, Callable]:
    """A file of ``kind`` and the function of the network it holds."""
    if kind == "example .pth":
        trained = request.getfixturevalue("trained")
        return example_file(trained, tmp_path / "candy.pth"), lambda x: trained(x * 255) / 255
    net, arch = nst_fast_network(tmp_path)
    if kind == "model.pt":
        return save_model(net, tmp_path / "model.pt", style="other", step=5), net
    path = tmp_path / "step=5.ckpt"
    state = {f"transformer.{k}": v for k, v in net.state_dict().items()}
    hparams = {"model": arch, "style": {"name": "other"}, "loss": {}}
    checkpoint = {"pytorch-lightning_version": "2.6.0", "global_step": 5, "state_dict": state}
    torch.save({**checkpoint, "hyper_parameters": hparams}, path)
    return path, net


def module_of(style_file: Path, *overrides: str) -> StyleTransferModule:
    style = [f"style.image={style_file}", "style.size=32", *FULL_SIZE_STYLE]
    cfg = compose([*style, "loss.weights=random", *overrides])
    return StyleTransferModule.from_config(cfg)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("kind", ["model.pt", "checkpoint", "example .pth"])
def test_model_init_starts_training_from_the_networks_own_loss(request, style_file, tmp_path, kind):
    path, reference = init_file(kind, tmp_path, request)
    module = module_of(style_file, f"model.init='{path}'", *AS_EXAMPLE)
    module.setup("fit")
    module.on_fit_start()
    photos = torch.rand(2, 3, 32, 32)
    first = module.training_step({"image": photos}, 0)["loss"]
    with torch.no_grad():
        expected = module.criteria[0](reference(photos), photos)["total"]
    torch.testing.assert_close(first.detach(), expected, rtol=1e-4, atol=0)
    # the setting is where training starts: model files record the architecture only
    assert "init" not in module.hparams["model"]


def test_model_init_of_another_architecture_is_one_line_naming_what_differs(
    trained, style_file, tmp_path
):
    path = example_file(trained, tmp_path / "candy.pth")
    with pytest.raises(NstFastError) as caught:
        module_of(style_file, f"model.init={path}")
    message = str(caught.value)
    assert "\n" not in message and f"model.init={path}" in message
    assert "model.output=linear" in message and "model.norm_scope=all" in message


# --- bad input: one line naming the file and what nst-fast reads ------------------------


def another_networks_weights(path: Path) -> Path:
    """The example's VGG16 loss network's state dict (its slice1..4 of VGG's features)."""
    torch.save(
        {"slice1.0.weight": torch.zeros(64, 3, 3, 3), "slice1.0.bias": torch.zeros(64)}, path
    )
    return path


def a_classifier(path: Path) -> Path:
    from torchvision.models import squeezenet1_1

    torch.save(squeezenet1_1().state_dict(), path)
    return path


def a_pickled_module(path: Path) -> Path:
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3)), path)
    return path


BAD = {
    "the example's VGG": (another_networks_weights, "the weights of another network"),
    "a classifier": (a_classifier, "the weights of another network (keys features.0.weight"),
    "a pickled whole network": (a_pickled_module, "holds Python objects besides tensors"),
}


@pytest.mark.parametrize("kind", [*BAD, "a truncated file", "an example file missing a layer"])
def test_a_pth_nst_fast_cannot_read_is_one_line_naming_it_and_what_it_reads(
    request, tmp_path, capsys, kind
):
    path = tmp_path / "saved_models" / "candy.pth"
    path.parent.mkdir()
    if kind in BAD:
        make, message = BAD[kind]
        make(path)
        reads = "nst-fast reads its model.pt files"
    else:
        trained = request.getfixturevalue("trained")
        example_file(trained, path)
        if kind == "a truncated file":
            path.write_bytes(path.read_bytes()[:50_000])
            message, reads = "a damaged or truncated PyTorch file", "nst-fast reads"
        else:
            state = torch.load(path)
            del state["res5.in2.weight"]
            torch.save(state, path)
            message, reads = "no res5.in2.weight", "neural_style.py eval loads"
    photo = save_image(make_photo((32, 32), 0), tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["stylize", str(path), str(photo), "-o", str(out)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"nst-fast stylize: error: {path}: ")
    assert message in line and reads in line
    assert not out.exists()


def test_the_web_page_finds_the_examples_models_in_a_folder_by_their_style(trained, tmp_path):
    from nst_fast.web.models import find_models

    example_file(trained, tmp_path / "saved_models" / "udnie.pth")
    [model] = find_models([tmp_path / "saved_models"])
    assert model.style == "udnie" and model.path.name == "udnie.pth"
