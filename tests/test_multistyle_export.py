"""A network of several styles exported to ONNX and TorchScript keeps its style weights as
an input: blends and single styles match eager PyTorch, and the files stylize with
``--style`` as its model.pt does."""

import json
import re
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from nst_fast.batch import stylize_paths
from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.export import ModelFileError, load_network, save_model
from nst_fast.formats import check_against_eager, export_onnx, export_torchscript
from nst_fast.images import read_image, save_image
from nst_fast.model_loading import load_for_inference, style_choices
from nst_fast.models.transformer import (
    ConditionalInstanceNorm2d,
    TransformerNet,
    default_transformer_config,
    transformer_net,
)
from tests.conftest import make_photo

CPU = torch.device("cpu")
NAMES = ["a", "b", "c"]
BLEND = torch.tensor([0.2, 0.5, 0.3])


def three_styles() -> TransformerNet:
    """A tiny network of three styles whose norms differ from style to style (its tanh
    output stays inside (0, 1), so clamping hides no difference)."""
    torch.manual_seed(0)
    config = default_transformer_config(channels=[8, 16, 32], residual_blocks=1)
    net = TransformerNet(config, styles=3)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, ConditionalInstanceNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("multi")
    return save_model(three_styles(), folder / "multi.pt", style="a+b+c", step=5, styles=NAMES)


@pytest.fixture(scope="module")
def onnx_file(model) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return export_onnx(*load_network(model), model.with_suffix(".onnx"))


@pytest.fixture(scope="module")
def ts_file(model) -> Path:
    return export_torchscript(*load_network(model), model.with_suffix(".ts"))


@pytest.fixture(params=["onnx", "torchscript"])
def exported(request) -> Path:
    """The ONNX file, then the TorchScript file, of ``model``."""
    return request.getfixturevalue({"onnx": "onnx_file", "torchscript": "ts_file"}[request.param])


def test_an_exported_blend_of_styles_matches_the_eager_network_with_those_weights(model, exported):
    path = exported
    net, _ = load_network(model)
    loaded = load_for_inference(path, CPU, torch.float32)
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        expected = net(x, BLEND)
    assert expected.min() > 0 and expected.max() < 1  # nothing clamped away
    assert (loaded.select(BLEND).run(x) - expected).abs().max() < 1e-5


def test_one_style_of_an_export_is_the_single_style_network_of_that_style(model, exported):
    path = exported
    net, _ = load_network(model)
    loaded = load_for_inference(path, CPU, torch.float32)
    x = torch.rand(1, 3, 67, 93)
    with torch.no_grad():
        singles = [net.single_style(torch.eye(3)[i])(x) for i in range(3)]
    for i, expected in enumerate(singles):
        assert (loaded.select(torch.eye(3)[i]).run(x) - expected).abs().max() < 1e-5
    # the style input matters: the styles' images differ by far more than the tolerance
    assert (singles[0] - singles[1]).abs().max() > 1e-2


def test_an_export_records_the_style_names_and_stylizes_with_a_style_choice(exported):
    path = exported
    loaded = load_for_inference(path, CPU, torch.float32)
    assert loaded.styles == NAMES and loaded.style == "a+b+c"
    (label, chosen), *rest = style_choices("c", loaded)
    assert label is None and not rest and chosen.style == "c"
    assert [label for label, _ in style_choices("all", loaded)] == NAMES


def test_running_an_export_of_several_styles_without_choosing_is_one_line(exported):
    path = exported
    loaded = load_for_inference(path, CPU, torch.float32)
    with pytest.raises(NstFastError, match=re.escape("choose one of its styles (a, b, c)")):
        loaded.run(torch.rand(1, 3, 16, 16))


def test_stylize_writes_the_same_blend_from_the_export_as_from_the_model_pt(
    model, exported, tmp_path
):
    path = exported
    photo = save_image(make_photo((45, 61), 2), tmp_path / "p.png")
    outputs = {}
    for source in (model, path):
        out = tmp_path / f"{source.suffix[1:]}.png"
        report = stylize_paths(source, [photo], out, style="a=1,b=1", precision="fp32")
        assert report.written == [out]
        outputs[source.suffix] = read_image(out)
    pt, other = outputs[".pt"], outputs[path.suffix]
    assert (pt - other).abs().max() <= 1 / 255 + 1e-6  # one 8-bit level: float rounding
    # and it is the blend, not one style: its eager half-and-half differs from each style
    net, _ = load_network(model)
    with torch.no_grad():
        a_alone = net(read_image(photo)[None], torch.eye(3)[0])[0].clamp(0, 1)
    assert (pt - a_alone).abs().max() > 5 / 255


def test_the_stylize_command_takes_style_for_an_exported_file(exported, tmp_path, capsys):
    path = exported
    photo = save_image(make_photo((30, 41), 0), tmp_path / "p.png")
    args = ["stylize", str(path), str(photo), "-o", str(tmp_path / "out"), "-q"]
    assert main([*args, "--style", "all"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p_a.png", "p_b.png", "p_c.png"]
    assert main([*args, "--style", "wave", "--overwrite"]) == 2
    assert "no style 'wave'; the model has a, b, c" in capsys.readouterr().err


@pytest.mark.slow
def test_the_export_command_checks_a_model_of_several_styles_alone_and_blended(
    model, tmp_path, capsys
):
    target = tmp_path / "multi.ts"
    assert main(["export", str(model), "--format", "torchscript", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    found = re.search(
        r"max \|torchscript - pytorch\| = (\S+) on .*, style a and a blend of all 3", out
    )
    assert found and float(found[1]) < 1e-5
    assert "and style, 3 weights in the order a, b, c" in out


@pytest.mark.slow
def test_the_check_after_export_notices_an_export_whose_styles_are_in_another_order(
    model, tmp_path
):
    net, info = load_network(model)
    swapped = three_styles()
    with torch.no_grad():
        for module in swapped.modules():
            if isinstance(module, ConditionalInstanceNorm2d):
                module.weight.copy_(module.weight.flip(0))
                module.bias.copy_(module.bias.flip(0))
    path = export_torchscript(swapped, info, tmp_path / "swapped.ts")
    loaded = load_for_inference(path, CPU, torch.float32)
    assert check_against_eager(loaded, net) > 1e-2


def test_an_onnx_export_of_several_styles_names_its_inputs_image_and_style(onnx_file):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    inputs = [(i.name, i.shape, i.type) for i in session.get_inputs()]
    assert inputs == [
        ("image", ["batch", 3, "height", "width"], "tensor(float)"),
        ("style", [3], "tensor(float)"),
    ]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["nst_fast.styles"]) == NAMES


@pytest.fixture(scope="module")
def one_style(tmp_path_factory) -> Path:
    net = transformer_net(channels=[8, 16, 32], residual_blocks=1)
    return save_model(net, tmp_path_factory.mktemp("one") / "one.pt", style="x", step=1)


def test_a_one_style_onnx_export_still_takes_only_the_image_and_records_no_styles(one_style):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = export_onnx(*load_network(one_style), one_style.with_suffix(".onnx"))
    session = ort.InferenceSession(str(path))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("image", ["batch", 3, "height", "width"])
    ]
    assert "nst_fast.styles" not in session.get_modelmeta().custom_metadata_map


def test_a_one_style_torchscript_export_records_no_styles_and_loads_as_one_style(one_style):
    ts = export_torchscript(*load_network(one_style), one_style.with_suffix(".ts"))
    with zipfile.ZipFile(ts) as archive:
        (name,) = (n for n in archive.namelist() if n.endswith("/extra/nst_fast.json"))
        meta = json.loads(archive.read(name))
    assert set(meta) == {"style", "step", "arch"}
    assert load_for_inference(ts, CPU, torch.float32).styles == []


def test_a_torchscript_export_of_several_styles_runs_in_bf16_and_pins_no_device(model, ts_file):
    net, _ = load_network(model)
    with zipfile.ZipFile(ts_file) as archive:
        code = "".join(
            archive.read(name).decode() for name in archive.namelist() if name.endswith(".py")
        )
    assert "torch.device(" not in code  # a trace's cast to the CPU would pin it there
    loaded = load_for_inference(ts_file, CPU, torch.bfloat16)
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        expected = net(x, BLEND)
    assert (loaded.select(BLEND).run(x) - expected).abs().max() < 0.05


def test_an_onnx_export_with_a_broken_list_of_styles_is_refused_in_one_line(onnx_file, tmp_path):
    import onnx

    path = tmp_path / "broken.onnx"
    proto = onnx.load(str(onnx_file))
    for entry in proto.metadata_props:
        if entry.key == "nst_fast.styles":
            entry.value = '["a"]'
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match="its list of styles is not two or more names"):
        load_for_inference(path, CPU, torch.float32)


def test_the_web_page_offers_the_styles_of_an_exported_file_of_several(model, exported):
    from nst_fast.web import make_engine
    from nst_fast.web.models import describe

    offered = describe(exported, exported.parent, [])
    assert offered.styles == NAMES and offered.style == "a+b+c"
    engine = make_engine([exported], device="cpu", precision="fp32")
    photo = make_photo((20, 28), 9)
    net, _ = load_network(model)
    with torch.no_grad():
        expected = net.single_style(torch.eye(3)[1])(photo[None])[0]
    assert (engine.stylize(engine.labels[0], photo, style="b") - expected).abs().max() < 1e-4


def test_an_onnx_export_of_several_styles_needs_the_onnx_package_for_their_names(
    model, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    target = tmp_path / "multi.onnx"
    assert main(["export", str(model), "--format", "onnx", "-o", str(target)]) == 2
    assert "records their names with the onnx package: pip install" in capsys.readouterr().err
    assert not target.exists()
