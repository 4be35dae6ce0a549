"""Exported TorchScript and ONNX files match the eager network and stylize like model.pt."""

from pathlib import Path

import pytest
import torch

from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.export import load_model, save_model
from nst_fast.formats import export_onnx, export_torchscript
from nst_fast.images import save_image
from nst_fast.model_loading import detect_format, load_for_inference
from nst_fast.models.transformer import transformer_net
from tests.conftest import make_photo

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = transformer_net(channels=(8, 16, 32), residual_blocks=1)
    # a network whose output stays inside [0, 1], so that clamping hides no difference
    with torch.no_grad():
        net.decoder[-1][-1].weight.mul_(0.01)
        net.decoder[-1][-1].bias.fill_(0.5)
    return save_model(net, tmp_path_factory.mktemp("m") / "model.pt", style="tiny", step=3)


@pytest.mark.parametrize("size", [(1, 3, 64, 64), (2, 3, 37, 50)])
def test_torchscript_matches_eager_at_any_size(model, tmp_path, size):
    net, info = load_model(model)
    path = export_torchscript(net, info, tmp_path / "model.ts")
    assert detect_format(path) == "torchscript"
    loaded = load_for_inference(path, CPU, torch.float32)
    x = torch.rand(size)
    assert (loaded.run(x) - net(x).clamp(0, 1)).abs().max() < 1e-4
    assert "tiny" in loaded.description


@pytest.mark.parametrize("size", [(1, 3, 64, 64), (2, 3, 37, 50), (1, 3, 101, 33)])
def test_onnx_has_dynamic_height_and_width_and_matches_eager(model, tmp_path, size):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    net, info = load_model(model)
    path = export_onnx(net, info, tmp_path / "model.onnx")
    loaded = load_for_inference(path, CPU, torch.float32)
    x = torch.rand(size)
    assert (loaded.run(x) - net(x).clamp(0, 1)).abs().max() < 1e-4
    assert loaded.channels == [8, 16, 32]


@pytest.mark.parametrize("taps", [3, 5])
@pytest.mark.parametrize("export", [export_torchscript, export_onnx])
def test_an_antialiased_network_exports_and_matches_eager(tmp_path, export, taps):
    # Its low-pass filters and smooth upsampling, at a size that is not a multiple of 4.
    if export is export_onnx:
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = transformer_net(
        channels=(8, 16, 32), residual_blocks=1, antialias=True, antialias_taps=taps
    )
    net, info = load_model(save_model(net, tmp_path / "model.pt", style="smooth", step=1))
    name = "model.onnx" if export is export_onnx else "model.ts"
    loaded = load_for_inference(export(net, info, tmp_path / name), CPU, torch.float32)
    x = torch.rand(1, 3, 37, 50)
    assert (loaded.run(x) - net(x).clamp(0, 1)).abs().max() < 1e-4


def test_export_command_writes_and_checks_the_file(model, tmp_path, capsys):
    target = tmp_path / "tiny.ts"
    assert main(["export", str(model), "--format", "torchscript", "-o", str(target)]) == 0
    out = capsys.readouterr().out
    assert str(target) in out and "checked: max |torchscript - pytorch|" in out
    assert main(["export", str(model), "--format", "torchscript", "-o", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_exporting_a_model_onto_itself_is_refused_even_with_overwrite(model, capsys):
    assert main(["export", str(model), "--format", "pt", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "is the model being exported; -o names another file" in err
    load_model(model)


def test_stylize_accepts_an_exported_file(model, tmp_path):
    net, info = load_model(model)
    exported = export_torchscript(net, info, tmp_path / "model.ts")
    photo = save_image(make_photo((30, 41), 0), tmp_path / "p.png")
    assert main(["stylize", str(exported), str(photo), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert (tmp_path / "o" / "p.png").is_file()


def test_a_corrupt_exported_file_is_refused_clearly(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00garbage")
    pytest.importorskip("onnxruntime")
    with pytest.raises(NstFastError, match="not a loadable ONNX model"):
        load_for_inference(bad, CPU, torch.float32)


@pytest.mark.parametrize(
    ("fmt", "name", "says"),
    [
        ("onnx", "model.ts", "name it model.onnx"),
        ("torchscript", "model.onnx", "name it model.ts"),
        ("pt", "model.onnx", "name it model.pt"),
    ],
)
def test_an_export_whose_name_misleads_its_readers_is_refused(
    model, tmp_path, capsys, fmt, name, says
):
    target = tmp_path / name
    assert main(["export", str(model), "--format", fmt, "-o", str(target)]) == 2
    assert says in capsys.readouterr().err
    assert not target.exists()


def test_an_unwritable_export_is_one_line_naming_it(model, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder.ts").mkdir()
    assert main(["export", str(model), "--format", "pt", "-o", str(tmp_path / "afile/m.pt")]) == 2
    assert f"m.pt: cannot write (File exists: {tmp_path / 'afile'})" in capsys.readouterr().err
    target = tmp_path / "folder.ts"
    assert main(["export", str(model), "--format", "torchscript", "-o", str(target)]) == 2
    assert "folder.ts: is a folder; name the file to write" in capsys.readouterr().err


def test_tiling_an_exported_model_says_its_seams_can_show(model, tmp_path, capsys):
    net, info = load_model(model)
    exported = export_torchscript(net, info, tmp_path / "model.ts")
    photo = save_image(make_photo((90, 70), 0), tmp_path / "p.png")
    args = ["stylize", str(exported), str(photo), "-o", str(tmp_path / "o"), "--tile", "64"]
    assert main([*args, "--tile-overlap", "16", "-q"]) == 0
    assert (
        "1 image(s) stylized in tiles, each tile normalized on its own" in capsys.readouterr().err
    )


def test_an_onnx_model_budgets_memory_for_the_fp32_it_computes_in(model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from nst_fast import memory

    net, info = load_model(model)
    exported = export_onnx(net, info, tmp_path / "model.onnx")
    photo = save_image(make_photo((30, 41), 0), tmp_path / "p.png")
    budgets = []
    real = memory.max_pixels
    monkeypatch.setattr(
        memory, "max_pixels", lambda d, c, dtype: budgets.append(dtype) or real(d, c, dtype)
    )
    args = [str(exported), str(photo), "-o", str(tmp_path / "o"), "--precision", "bf16", "-q"]
    assert main(["stylize", *args]) == 0
    assert budgets == [torch.float32]
