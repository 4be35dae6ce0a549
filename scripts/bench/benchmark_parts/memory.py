"""The peak-memory figures: each measured in a fresh process (the entry script run again
with --child), so that one figure's high-water mark does not carry into the next.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmark_parts import paths
from benchmark_parts.setups import setup_from_spec
from benchmark_parts.stylizing import make_transformer
from benchmark_parts.timing import sync
from benchmark_parts.training import make_module, random_photos, train_step_fn
from nst_fast.inference import stylize


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM, which exec resets (ru_maxrss would carry over the
    parent's high-water mark into a child), else ru_maxrss."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_main(spec: dict) -> dict:
    """Run one memory measurement in this fresh process; returns the peak."""
    device = spec["device"]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = peak_rss_mib()
    if spec["what"] == "train":
        setup = setup_from_spec(spec["setup"])
        module, optimizer = make_module(setup, spec["weights"])
        batch = random_photos(spec["batch"], spec["size"], device)
        step = train_step_fn(setup, module, optimizer, batch)
        for _ in range(2):
            step()
    elif spec["what"] == "stylize":
        setup = setup_from_spec(spec["setup"])
        setup.compile = ()  # compiling at 2048 px takes longer than it saves here
        net = make_transformer(setup)
        image = torch.rand(3, spec["size"], spec["size"])
        stylize(net, image, half=setup.amp is not None, fast=setup.fast)
    elif spec["what"] == "peer-stylize":
        # The reference's own network, imported read-only from ../shared, as its
        # neural_style.py stylize() runs it: eval, no_grad, pixels in [0, 255].
        sys.path.insert(0, str(paths.PEER_DIR))
        from transformer_net import TransformerNet as PeerNet

        net = PeerNet().to(device).eval()
        with torch.no_grad():
            net(torch.rand(1, 3, spec["size"], spec["size"], device=device) * 255).cpu()
    sync(device)
    if device == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "base_mib": 0.0}
    return {"peak_mib": peak_rss_mib(), "base_mib": base}


def run_child(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, str(paths.SCRIPT), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"memory child {spec['what']} failed:\n{out.stderr[-2000:]}")
