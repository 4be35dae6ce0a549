#!/usr/bin/env python3
"""Seconds per image of nst-fast's stylization, beside the reference implementation's.

    python scripts/bench/bench_stylize.py [--model model.pt] [--sizes 256 512 1024 2048] [--plain]

Times one forward pass of the transform network (the default config's `model`, the default
architecture, with random weights unless --model is given: speed does not depend on the
weights) at each size, batch 1 and batched, on the CPU and, when there is one, the GPU
(half precision), and the ONNX Runtime export on the CPU when onnxruntime is installed.
In the same run it starts ../shared/bench/peer_bench.py (pytorch/examples
fast_neural_style, which measures
512 and 1024 px) and prints the ratio peer / nst-fast (above 1: nst-fast is faster).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
PEER_BENCH = ROOT.parent / "shared" / "bench" / "peer_bench.py"
sys.path.insert(0, str(ROOT))

from nst_fast.config import compose  # noqa: E402
from nst_fast.device import inference_dtype, keep_freed_memory  # noqa: E402
from nst_fast.export import ModelInfo, load_model  # noqa: E402
from nst_fast.models.transformer import TransformerConfig, TransformerNet  # noqa: E402
from nst_fast.prepared import forward, prepare  # noqa: E402

# Batch sizes for the batched figures; large images on the CPU only once (minutes each).
BATCH = {256: 8, 512: 4, 1024: 2, 2048: 0}


def peer_figures(device: str) -> dict[int, float]:
    """{size: s/img} from the reference benchmark (its training figure is kept tiny)."""
    if not PEER_BENCH.is_file():
        return {}
    cmd = [sys.executable, str(PEER_BENCH), "--device", device, "--steps", "1"]
    cmd += ["--batch", "1", "--size", "64"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = re.findall(r"peer stylize (\d+)px: ([\d.]+) s/img", result.stdout)
    if not found:
        print(f"  (peer benchmark failed: {result.stderr.strip().splitlines()[-1:]})")
    return {int(size): float(seconds) for size, seconds in found}


def seconds_per_image(run, batch: torch.Tensor, device: torch.device, repeats: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(batch)  # warm-up: kernel selection, oneDNN primitive creation
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    sync()
    return (time.perf_counter() - start) / repeats / batch.shape[0]


def repeats_for(size: int, device: torch.device) -> int:
    if device.type == "cuda":
        return 10
    return 2 if size <= 512 else 1


def bench_device(
    net, device: torch.device, sizes: list[int], peer: dict[int, float], plain: bool = False
) -> None:
    dtype = inference_dtype(device)
    fast = prepare(net, device, dtype, fast=not plain)
    layout = "plain PyTorch modules" if plain else "channels_last"
    print(f"\n{device.type} ({str(dtype).removeprefix('torch.')}, {layout})")
    print(f"  {'size':>6} {'batch 1':>12} {'batched':>18} {'peer (batch 1)':>16} {'ratio':>7}")
    for size in sizes:
        x = torch.rand(1, 3, size, size, device=device)
        single = seconds_per_image(lambda b: forward(fast, b), x, device, repeats_for(size, device))
        n = BATCH[size] if device.type == "cpu" else max(BATCH[size], 2) * 2
        batched = ""
        if n:
            xb = x.expand(n, -1, -1, -1).contiguous()
            s = seconds_per_image(lambda b: forward(fast, b), xb, device, 1)
            batched = f"{s:.4f} s/img (x{n})"
        reference = peer.get(size)
        ref_text = f"{reference:.4f} s/img" if reference else "-"
        ratio = f"{reference / single:.2f}x" if reference else ""
        print(f"  {size:>6} {single:>8.4f} s/img {batched:>18} {ref_text:>16} {ratio:>7}")


def bench_onnx(net, info: ModelInfo, sizes: list[int], peer: dict[int, float]) -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("\nonnxruntime: not installed, skipped")
        return
    from nst_fast.formats import export_onnx
    from nst_fast.model_loading import load_for_inference

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(net, info, Path(tmp) / "model.onnx")
        model = load_for_inference(path, cpu, torch.float32)
        print("\nonnxruntime on cpu (exported model.onnx, fp32)")
        for size in [s for s in sizes if s <= 1024]:
            x = torch.rand(1, 3, size, size)
            single = seconds_per_image(model.run, x, cpu, repeats_for(size, cpu))
            reference = peer.get(size)
            ratio = f"{reference / single:.2f}x" if reference else ""
            print(f"  {size:>6} {single:>8.4f} s/img {'':>18} {'':>16} {ratio:>7}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model.pt (default: random weights)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--no-peer", action="store_true", help="skip the reference run")
    parser.add_argument(
        "--plain", action="store_true",
        help="time the plain PyTorch modules, without nst-fast's speed work (A/B)",
    )  # fmt: skip
    args = parser.parse_args()
    keep_freed_memory()  # as the nst-fast command runs (1024 px bf16: 1.50 s without, 0.93 with)
    for size in args.sizes:
        BATCH.setdefault(size, 0)

    torch.manual_seed(0)
    if args.model:
        net, info = load_model(args.model)
    else:
        model = OmegaConf.to_container(compose().model)
        net = TransformerNet(TransformerConfig.of(model)).eval()
        info = ModelInfo(style="random", step=0, arch=net.config.to_dict(), nst_fast_version="")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        peer = {} if args.no_peer else peer_figures(device.type)
        bench_device(net, device, args.sizes, peer, plain=args.plain)
        if device.type == "cpu":
            bench_onnx(net, info, args.sizes, peer)


if __name__ == "__main__":
    main()
