"""ExecuTorch exports (.pte, XNNPACK) match the eager network, record what they are, and
stylize like model.pt; what cannot be exported or run is one line, and nothing is left
half-written. Skipped where the executorch package is not installed
(pip install 'nst-fast[executorch]'), but for the message that says so."""

import sys
from pathlib import Path

import pytest
import torch

from nst_fast.cli import main
from nst_fast.errors import NstFastError
from nst_fast.executorch_export import export_executorch, read_metadata
from nst_fast.export import load_network, save_model
from nst_fast.images import save_image
from nst_fast.model_loading import detect_format, load_for_inference
from nst_fast.models.transformer import TransformerNet, default_transformer_config
from tests.conftest import make_photo
from tests.test_multistyle_export import BLEND, NAMES, three_styles

CPU = torch.device("cpu")
# Small: ExecuTorch reserves memory for the largest side when it loads a program.
MAX_SIZE = 128
# The tolerance the TorchScript and ONNX exports are held to (tests/test_formats.py).
TOLERANCE = 1e-4

pytestmark = pytest.mark.slow  # each export lowers the network, seconds on a CPU


def tiny() -> TransformerNet:
    """A tiny network whose output stays inside [0, 1], so clamping hides no difference."""
    torch.manual_seed(0)
    net = TransformerNet(default_transformer_config(channels=[8, 16, 32], residual_blocks=1))
    with torch.no_grad():
        net.decoder[-1][-1].weight.mul_(0.01)
        net.decoder[-1][-1].bias.fill_(0.5)
    return net.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_model(tiny(), tmp_path_factory.mktemp("et") / "model.pt", style="tiny", step=3)


@pytest.fixture(scope="module")
def pte(model) -> Path:
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    return export_executorch(*load_network(model), model.with_suffix(".pte"), max_size=MAX_SIZE)


@pytest.fixture(scope="module")
def multi_pte(tmp_path_factory) -> Path:
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    folder = tmp_path_factory.mktemp("et_multi")
    model = save_model(three_styles(), folder / "multi.pt", style="a+b+c", step=5, styles=NAMES)
    return export_executorch(*load_network(model), folder / "multi.pte", max_size=MAX_SIZE)


@pytest.mark.parametrize("size", [(1, 3, 64, 64), (2, 3, 37, 50), (1, 3, 101, 33)])
def test_a_pte_matches_eager_at_any_size_up_to_its_largest(model, pte, size):
    net, _ = load_network(model)
    loaded = load_for_inference(pte, CPU, torch.float32)
    x = torch.rand(size)
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
    assert (loaded.run(x) - expected).abs().max() < TOLERANCE
    assert loaded.format == "executorch" and "tiny" in loaded.description
    assert loaded.channels == [8, 16, 32]


def test_a_pte_records_its_style_architecture_and_sizes_inside_the_file(pte):
    _, meta = read_metadata(pte)
    assert meta["style"] == "tiny" and meta["step"] == "3"
    assert (meta["multiple"], meta["max_size"]) == ("4", str(MAX_SIZE))
    assert '"channels": [8, 16, 32]' in meta["arch"]
    assert "styles" not in meta
    assert sorted(pte.parent.iterdir()) == sorted([pte, pte.with_suffix(".pt")])  # no sidecar


def test_a_pte_is_told_by_its_content_not_only_its_name(pte, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(pte.read_bytes())
    assert detect_format(renamed) == "executorch"


def test_a_pte_of_several_styles_matches_eager_for_one_style_and_a_blend(multi_pte):
    net = three_styles()
    loaded = load_for_inference(multi_pte, CPU, torch.float32)
    assert loaded.styles == NAMES
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        blend, second = net(x, BLEND), net(x, torch.tensor([0.0, 1.0, 0.0]))
    assert blend.min() > 0 and blend.max() < 1  # nothing clamped away
    assert (loaded.select(BLEND).run(x) - blend).abs().max() < TOLERANCE
    assert (loaded.select(torch.tensor([0.0, 1.0, 0.0])).run(x) - second).abs().max() < TOLERANCE
    with pytest.raises(NstFastError, match=r"choose one of its styles \(a, b, c\)"):
        loaded.run(x)


def test_the_export_command_writes_a_pte_and_checks_it_with_executorchs_runtime(
    model, tmp_path, capsys
):
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    target = tmp_path / "tiny.pte"
    args = ["export", str(model), "--format", "executorch", "--max-size", "132", "-o", str(target)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert str(target) in out and "checked: max |executorch - pytorch|" in out
    assert float(out.split("= ")[1].split()[0]) < TOLERANCE
    assert read_metadata(target)[1]["max_size"] == "132"


def test_stylize_takes_a_pte_and_tiles_a_photo_larger_than_it_takes(pte, tmp_path, capsys):
    small = save_image(make_photo((30, 41), 0), tmp_path / "small.png")
    assert main(["stylize", str(pte), str(small), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert (tmp_path / "o" / "small.png").is_file()
    capsys.readouterr()
    large = save_image(make_photo((MAX_SIZE + 20, 60), 1), tmp_path / "large.png")
    assert main(["stylize", str(pte), str(large), "-o", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"takes photos of 5 to {MAX_SIZE} pixels a side, not {MAX_SIZE + 20}x60" in err
    assert f"--tile {MAX_SIZE}, or export it again with --max-size {MAX_SIZE + 20}" in err
    assert len(err.strip().splitlines()) == 1
    args = ["stylize", str(pte), str(large), "-o", str(tmp_path / "t"), "--tile", "64", "-q"]
    assert main(args) == 0
    assert (tmp_path / "t" / "large.png").is_file()


def test_a_model_that_cannot_be_exported_is_one_line_and_nothing_is_written(
    model, tmp_path, monkeypatch
):
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    from nst_fast import executorch_export

    def fails(*args: object) -> bytes:
        raise RuntimeError("Unsupported operator: aten.weird\nwith a long trace below")

    monkeypatch.setattr(executorch_export, "_lower", fails)
    target = tmp_path / "out" / "model.pte"
    with pytest.raises(NstFastError) as raised:
        export_executorch(*load_network(model), target)
    message = str(raised.value)
    assert message == (
        "style tiny, step 3: cannot be exported to ExecuTorch (Unsupported operator: "
        "aten.weird); export it as onnx or torchscript instead"
    )
    assert not target.parent.exists() or not any(target.parent.iterdir())


@pytest.mark.parametrize("max_size", ["64", "130"])
def test_a_max_size_the_network_cannot_take_is_one_line_before_anything_is_written(
    model, tmp_path, capsys, max_size
):
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    target = tmp_path / "model.pte"
    args = ["export", str(model), "--format", "executorch", "--max-size", max_size]
    assert main([*args, "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"--max-size {max_size}: the largest side of an ExecuTorch export is a multiple" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--format", "executorch", "-o", "model.ts"], "name it model.pte"),
        (["--format", "torchscript", "-o", "model.pte"], "name it model.ts"),
        (["--format", "onnx", "--max-size", "512"], "--max-size: only an ExecuTorch export"),
    ],
)
def test_an_export_named_or_sized_against_its_format_is_refused(
    model, tmp_path, capsys, args, says
):
    args = [a if a not in ("model.ts", "model.pte") else str(tmp_path / a) for a in args]
    assert main(["export", str(model), *args]) == 2
    assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_corrupt_pte_is_refused_in_one_line(tmp_path):
    pytest.importorskip("executorch.runtime", reason="pip install 'nst-fast[executorch]'")
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"\x00\x00\x00\x00ET12garbage")
    with pytest.raises(NstFastError, match="not a loadable ExecuTorch program") as raised:
        load_for_inference(bad, CPU, torch.float32)
    assert "write it again with nst-fast export MODEL.pt --format executorch" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_without_executorch_an_export_says_how_to_install_it(model, tmp_path, monkeypatch):
    # Runs with or without the package: a None in sys.modules makes its import fail.
    monkeypatch.setitem(sys.modules, "executorch", None)
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    target = tmp_path / "model.pte"
    with pytest.raises(NstFastError, match=r"pip install 'nst-fast\[executorch\]'"):
        export_executorch(*load_network(model), target)
    assert not target.exists()
