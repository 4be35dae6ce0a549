"""Model files: those written by earlier versions load and stylize to the same pixels;
one that does not fit stops every command with one line and writes nothing.

``tests/data/model_v1_tiny.{pt,ts,onnx}`` were written by nst-fast 0.x (format version 1,
commit 981fc9c) with ``save_model``, ``export_torchscript`` and ``export_onnx``: a tiny
network (channels [4, 8, 8], one residual block, tanh output, norms in the encoder and
the residual blocks) with seeded random weights, norm affines included.
``model_v1_tiny_expected.pt`` holds a fixed input (2 x 3 x 23 x 30, uint8) and what that
version's eager network made of it in fp32. Nothing here is computed by the code under
test: a redesign that changes the network, its state-dict keys or the loading code
fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nst_fast.cli import main
from nst_fast.export import load_model, save_model
from nst_fast.formats import export_onnx, export_torchscript
from nst_fast.model_loading import load_for_inference
from nst_fast.models.transformer import TransformerConfig, TransformerNet
from tests.conftest import nst_fast, tiny_overrides

DATA = Path(__file__).parent / "data"
MODEL = DATA / "model_v1_tiny.pt"
# fp32 rounding over a dozen layers of a tiny network; real mistakes are 1e-2 and more.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def expected() -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(DATA / "model_v1_tiny_expected.pt", weights_only=True)
    return saved["input"].float() / 255, saved["output"]


def test_v1_model_pt_stylizes_as_written(expected):
    x, y = expected
    net, info = load_model(MODEL)
    assert (info.style, info.step, info.format_version) == ("tiny", 7, 1)
    assert info.arch["channels"] == [4, 8, 8] and info.arch["norm_scope"] == "residual"
    with torch.inference_mode():
        out = net(x)
    torch.testing.assert_close(out, y, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("suffix", [".pt", ".ts", ".onnx"])
def test_v1_files_stylize_as_written_for_inference(expected, suffix):
    if suffix == ".onnx":
        pytest.importorskip("onnxruntime")
    x, y = expected
    model = load_for_inference(MODEL.with_suffix(suffix), torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        out = model.run(x)
    torch.testing.assert_close(out, y.clamp(0, 1), atol=TOLERANCE, rtol=0)


# --- a file that does not fit is one line, a non-zero exit and no output ---------------


def tampered(path: Path, change) -> Path:
    """``path`` with ``change`` applied to a copy of the v1 model.pt's contents."""
    payload = torch.load(MODEL, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def set_weight(name: str, value: torch.Tensor):
    return lambda payload: payload["state_dict"].__setitem__(name, value)


def set_arch(key: str, value):
    return lambda payload: payload["arch"].__setitem__(key, value)


FIRST_CONV = "encoder.0.1.weight"  # 4 x 3 x 9 x 9
MODEL_PT_FAILURES = {
    "wrong shape": (set_weight(FIRST_CONV, torch.zeros(4, 3, 3, 3)), "do not fit"),
    "missing weight": (lambda p: p["state_dict"].pop(FIRST_CONV), f"no {FIRST_CONV}"),
    "extra weight": (set_weight("encoder.9.weight", torch.zeros(3)), "unexpected encoder.9"),
    "unknown field": (set_arch("attention", True), "model.attention, which nst-fast"),
    "unusable value": (set_arch("norm", "group"), "cannot build the network it records"),
    "too few widths": (set_arch("channels", [4]), "cannot build the network it records"),
    "non-finite weight": (
        set_weight("decoder.2.1.bias", torch.full((3,), float("nan"))),
        "weight decoder.2.1.bias holds NaN",
    ),
    "no architecture": (lambda p: p.pop("arch"), "not an nst-fast model"),
}


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    from nst_fast.images import save_image

    save_image(torch.rand(3, 20, 28), tmp_path / "photos" / "p.png")
    return tmp_path / "photos"


def one_line(capsys, command: str) -> str:
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"nst-fast {command}: error: ")
    return line


def command_line(command: str, model: Path, photos: Path, out: Path) -> list[str]:
    return {
        "stylize": ["stylize", str(model), str(photos), "-o", str(out), "-q"],
        "export": ["export", str(model), "--format", "torchscript", "-o", str(out / "m.ts")],
        "evaluate": ["evaluate", str(model), "--content", str(photos), "-o", str(out)],
    }[command]


@pytest.mark.parametrize("command", ["stylize", "export", "evaluate"])
@pytest.mark.parametrize("kind", MODEL_PT_FAILURES)
def test_a_model_pt_that_does_not_fit_is_one_line_and_writes_nothing(
    tmp_path, photos, capsys, command, kind
):
    change, message = MODEL_PT_FAILURES[kind]
    model = tampered(tmp_path / "model.pt", change)
    out = tmp_path / "out"
    assert main(command_line(command, model, photos, out)) == 2
    line = one_line(capsys, command)
    assert str(model) in line and message in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("kind", "hint"),
    [
        ("unknown field", "upgrade it (pip install -U nst-fast)"),
        ("wrong shape", "export it again from its run"),
        ("non-finite weight", "export it again from its run"),
    ],
)
def test_each_refusal_says_what_to_do(tmp_path, photos, capsys, kind, hint):
    model = tampered(tmp_path / "model.pt", MODEL_PT_FAILURES[kind][0])
    assert main(command_line("stylize", model, photos, tmp_path / "out")) == 2
    assert hint in one_line(capsys, "stylize")


def checkpoint_of(payload: dict) -> dict:
    """A training checkpoint as ``nst-fast train`` writes one, for the network of a
    model.pt's contents."""
    return {
        "pytorch-lightning_version": "2.6.0",
        "global_step": 12,
        "state_dict": {f"transformer.{k}": v for k, v in payload["state_dict"].items()},
        "hyper_parameters": {
            "model": payload["arch"],
            "style": {"name": "tiny", "image": None},
            "loss": {},
        },
    }


def test_a_checkpoint_stylizes_as_its_model_pt_and_one_that_does_not_fit_is_one_line(
    tmp_path, expected, photos, capsys
):
    payload = torch.load(MODEL, weights_only=True)
    good = tmp_path / "good.ckpt"
    torch.save(checkpoint_of(payload), good)
    x, y = expected
    model = load_for_inference(good, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(model.run(x), y.clamp(0, 1), atol=TOLERANCE, rtol=0)

    payload["state_dict"][FIRST_CONV] = torch.zeros(4, 3, 3, 3)
    bad = tmp_path / "bad.ckpt"
    torch.save(checkpoint_of(payload), bad)
    for command in ("stylize", "export"):
        assert main(command_line(command, bad, photos, tmp_path / "out")) == 2
        line = one_line(capsys, command)
        assert str(bad) in line and "use an earlier checkpoint of the run" in line
    assert not (tmp_path / "out").exists()


def test_exported_files_with_non_finite_weights_write_no_black_image(tmp_path, photos, capsys):
    net, info = load_model(MODEL)
    with torch.no_grad():
        net.decoder[-1][1].bias.fill_(float("nan"))
    ts = export_torchscript(net, info, tmp_path / "nan.ts")
    assert main(command_line("stylize", ts, photos, tmp_path / "out")) == 2
    assert "holds NaN" in one_line(capsys, "stylize")
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        onnx = export_onnx(net, info, tmp_path / "nan.onnx")
        assert main(command_line("stylize", onnx, photos, tmp_path / "out")) == 1
        [line] = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
        assert "p.png: the model computed NaN or infinite values (nothing written)" in line
    assert not (tmp_path / "out").exists()


def test_a_file_of_an_earlier_version_gets_the_fields_it_does_not_record(tmp_path):
    """Before the output, norm-scope and anti-aliasing choices, networks had a linear
    output, norms everywhere, plain strided convolutions and nearest upsampling; such a
    file records none of the four."""
    config = TransformerConfig(
        channels=[4, 8],
        residual_blocks=1,
        norm="instance",
        output="linear",
        norm_scope="all",
        antialias=False,
        antialias_taps=3,
    )
    torch.manual_seed(0)
    net = TransformerNet(config)
    path = save_model(net, tmp_path / "old.pt", style="old", step=1)
    payload = torch.load(path, weights_only=True)
    for key in ("output", "norm_scope", "antialias", "antialias_taps"):
        del payload["arch"][key]
    torch.save(payload, path)
    loaded, info = load_model(path)
    assert (info.arch["output"], info.arch["norm_scope"]) == ("linear", "all")
    assert info.arch["antialias"] is False
    x = torch.rand(1, 3, 16, 20)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), net.eval()(x))


# --- training's ckpt_path=last ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("damaged", "not a training checkpoint (a damaged or truncated PyTorch file)"),
        ("foreign", "not an nst-fast training checkpoint (it records no model settings)"),
        ("weights that do not fit", "its weights do not fit the network it records"),
    ],
)
def test_a_last_checkpoint_that_cannot_resume_is_one_line(
    photo_folder, style_file, tmp_path, kind, message
):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    payload = torch.load(MODEL, weights_only=True)
    if kind == "damaged":
        last.write_bytes(MODEL.read_bytes()[:4000])
    elif kind == "foreign":  # a Lightning checkpoint of another project
        torch.save({"pytorch-lightning_version": "2.6.0", "state_dict": {"w": torch.ones(2)},
                    "hyper_parameters": {"lr": 0.1}}, last)  # fmt: skip
    else:
        ckpt = checkpoint_of(payload)
        del ckpt["state_dict"][f"transformer.{FIRST_CONV}"]
        torch.save(ckpt, last)
    before = last.read_bytes()
    result = nst_fast("train", *tiny_overrides(photo_folder, style_file, run_dir), "ckpt_path=last")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"nst-fast train: error: ckpt_path=last: {last}: {message}")
    assert last.read_bytes() == before
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert not (run_dir / "model.pt").exists()
