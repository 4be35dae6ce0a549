"""Model files written by earlier versions load and stylize to the same pixels.

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

from pathlib import Path

import pytest
import torch

from nst_fast.export import load_model
from nst_fast.formats import load_for_inference

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
