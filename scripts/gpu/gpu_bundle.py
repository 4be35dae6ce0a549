#!/usr/bin/env python3
"""Build .gpu-bundle/: what scripts/gpu/gpu_check.py needs on a lent GPU machine that the
machine lacks, within the device tool's limit (64 MiB for the working tree and the carried
paths together).

    python scripts/gpu/gpu_bundle.py     # make gpu-bundle; then send it as docs/development.md says

The machine starts bare from an image that has Python 3.12, PyTorch, torchvision,
Lightning, onnx and onnxruntime, but cannot reach a package registry, and ../shared beside
the checkout does not travel. So the bundle holds:

* wheels/: the packages nst-fast (with its onnx and video extras) needs that the image
  lacks, found by walking the requirements installed here and leaving out what the
  image has (DEVICE_HAS): hydra-core, omegaconf, antlr4 (built into a pure-Python wheel
  from its source, the only form PyPI has), torchdata and PyAV. gpu_check.py installs
  them into its scratch folder;
* shared/: a slice of ../shared in its layout: the reference and its benchmark, the
  style, the VGG16 weights made to fit (only the layers up to the deepest one the loss
  uses, in fp16: 7.7 MB in place of 59; gpu_check.py unpacks them back to fp32 in the
  layout both loaders take), and as many coco128 photos as the limit leaves room for;
* MANIFEST.json: what is in it, and the sizes it was built against.

The limit counts the working tree too, so the bundle is sized against this checkout's
tracked and untracked-not-ignored files: build it in the checkout the device tool sends,
and again after the tree grows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_parts.context import BUNDLE, FULL_WEIGHTS, PACKED_WEIGHTS  # noqa: E402

MIB = 2**20
LIMIT = 64 * MIB  # the device tool's limit on the working tree plus the carried paths
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
EXTRAS = ("onnx", "video")  # gpu_check exports to ONNX and stylizes a video
# The Python packages the lent machines' image ('cuda') holds, as the device tool's notes
# list them (read 2026-11-17). A requirement named here is left to the image.
DEVICE_PACKAGES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
    narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
    onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
    prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
    pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
    pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
    sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
    tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
    torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
    typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
    xarray xxhash yarl zipp
"""
DEVICE_HAS = frozenset(canonicalize_name(name) for name in DEVICE_PACKAGES.split())
# The marker environment of the machines: Linux, x86-64, CPython 3.12.
DEVICE_MARKERS = {
    "python_version": DEVICE_PYTHON,
    "python_full_version": f"{DEVICE_PYTHON}.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
REFERENCE = ("bench/peer_bench.py", "peers/pytorch_examples_fast_neural_style")
STYLE = "styles/starry_night.jpg"  # experiment=johnson2016's style
PHOTOS = "coco128/train2017"


# --------------------------------------------------------------------------- packages


def applies(requirement: Requirement, extras: tuple[str, ...]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**DEVICE_MARKERS, "extra": extra})
        for extra in (extras or ("",))
    )


def missing_packages(extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """{name: version installed here} of what nst-fast needs on the machine and its image
    lacks, with what those need in turn (what the image has brings its own needs)."""
    todo = [Requirement(r) for r in metadata.requires("nst-fast") or []]
    todo = [r for r in todo if applies(r, extras)]
    missing: dict[str, str] = {}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in DEVICE_HAS or name in missing:
            continue
        try:
            missing[name] = metadata.version(requirement.name)
        except metadata.PackageNotFoundError as err:
            raise SystemExit(f"{requirement.name} is not installed here: make install") from err
        needs = [Requirement(r) for r in metadata.requires(requirement.name) or []]
        todo += [r for r in needs if applies(r, ())]
    return dict(sorted(missing.items()))


def wheel_of(folder: Path, name: str, version: str) -> Path | None:
    for wheel in folder.glob("*.whl"):
        dist, wheel_version = wheel.name.split("-")[:2]
        if canonicalize_name(dist) == name and wheel_version == version:
            return wheel
    return None


def fetch_wheel(folder: Path, name: str, version: str) -> Path:
    """The machine's wheel of ``name==version``: a binary one for CPython 3.12 on
    manylinux x86-64, else one built here from the source (pure Python only)."""
    found = wheel_of(folder, name, version)
    if found:
        return found
    pip = [sys.executable, "-m", "pip", "-q"]
    platforms = [arg for p in DEVICE_PLATFORMS for arg in ("--platform", p)]
    download = [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    download += ["--python-version", DEVICE_PYTHON, "--implementation", "cp", *platforms]
    if subprocess.run([*download, f"{name}=={version}"], check=False).returncode:
        build = [*pip, "wheel", "--no-deps", "-w", str(folder), f"{name}=={version}"]
        subprocess.run(build, check=True)
    found = wheel_of(folder, name, version)
    if found is None or (
        not found.name.endswith("-none-any.whl") and "manylinux" not in found.name
    ):
        raise SystemExit(f"no wheel of {name}=={version} for the machine (got {found})")
    return found


# --------------------------------------------------------------------------- weights


def loss_layers_depth() -> tuple[int, str]:
    """The index of the deepest ReLU the VGG16 loss uses (conf/loss/vgg16.yaml), and its
    name: the layers after it never run."""
    from nst_fast.config import group_defaults
    from nst_fast.losses.vgg import relu_names, vgg_features

    loss = group_defaults("loss", "vgg16")
    names = relu_names(vgg_features("vgg16"))
    layers = [loss["content_layer"], *loss["style_layers"]]
    deepest = max(layers, key=lambda layer: names[layer])
    return names[deepest], deepest


def pack_weights(source: Path, target: Path) -> dict:
    """``source``'s convolutions before the deepest loss layer, in fp16."""
    from nst_fast.files import load_tensors

    depth, layer = loss_layers_depth()
    state = load_tensors(source)
    kept = {k: v for k, v in state.items() if int(k.split(".")[0]) < depth}
    packed = {k: v.half() for k, v in kept.items()}
    error = max(
        ((packed[k].float() - v).abs().max() / v.abs().max()).item() for k, v in kept.items()
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(packed, target)
    return {
        "file": target.name,
        "up_to": layer,
        "tensors": len(packed),
        "dtype": "float16",
        "largest_relative_error": error,
        "unpacked_by_gpu_check_into": FULL_WEIGHTS,
    }


# --------------------------------------------------------------------------- sizes


def git_files(*args: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def tree_bytes() -> int:
    """What travels besides the carried paths: tracked files, untracked files git does not
    ignore, and a shared/ folder inside the checkout."""
    files = git_files("--cached") + git_files("--others", "--exclude-standard")
    if (ROOT / "shared").is_dir():
        files += [p for p in (ROOT / "shared").rglob("*") if p.is_file()]
    return sum(p.lstat().st_size for p in set(files) if p.exists() or p.is_symlink())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- main


def copy_shared(shared: Path, target: Path, paths: tuple[str, ...]) -> None:
    for relative in paths:
        source, dest = shared / relative, target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest)
        else:
            shutil.copy(source, dest)


def add_photos(source: Path, target: Path, room: int, most: int) -> int:
    """coco128's photos in name order while they fit in ``room`` bytes; how many."""
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for photo in sorted(source.glob("*.jpg"))[:most]:
        size = photo.stat().st_size
        if size > room:
            break
        shutil.copy(photo, target / photo.name)
        room -= size
        count += 1
    return count


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip() or "unknown"


def build(shared: Path, out: Path, margin: int, most_photos: int) -> dict:
    if not (shared / PHOTOS).is_dir() or not (shared / "weights" / FULL_WEIGHTS).is_file():
        raise SystemExit(f"{shared}: not ../shared (no {PHOTOS} or weights/{FULL_WEIGHTS})")
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "shared", ignore_errors=True)  # an earlier build's photos
    (out / "MANIFEST.json").unlink(missing_ok=True)
    packages = missing_packages()
    kept = {fetch_wheel(wheels, name, version) for name, version in packages.items()}
    for wheel in set(wheels.glob("*.whl")) - kept:  # an earlier build's other versions
        wheel.unlink()
    target = out / "shared"
    copy_shared(shared, target, (*REFERENCE, STYLE))
    weights = pack_weights(shared / "weights" / FULL_WEIGHTS, target / "weights" / PACKED_WEIGHTS)
    tree = tree_bytes()
    room = LIMIT - margin - tree - folder_bytes(out)
    if room < 0:
        raise SystemExit(
            f"over the limit before any photo: tree {tree / MIB:.1f} MiB + bundle "
            f"{folder_bytes(out) / MIB:.1f} MiB > {(LIMIT - margin) / MIB:.0f} MiB"
        )
    photos = add_photos(shared / PHOTOS, target / PHOTOS, room, most_photos)
    bundle = folder_bytes(out)
    manifest = {
        "built": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "wheels": {w.name: w.stat().st_size for w in sorted(kept)},
        "weights": weights,
        "photos": photos,
        "bundle_mib": round(bundle / MIB, 2),
        "tree_mib": round(tree / MIB, 2),
        "total_mib": round((bundle + tree) / MIB, 2),
        "limit_mib": LIMIT // MIB,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared", help="../shared")
    p.add_argument("--out", type=Path, default=BUNDLE, help="the bundle (.gpu-bundle)")
    p.add_argument(
        "--margin-mib", type=float, default=2.0, help="room left under the limit (2 MiB)"
    )
    p.add_argument("--max-photos", type=int, default=128, help="coco128 photos at most")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    manifest = build(args.shared, args.out, int(args.margin_mib * MIB), args.max_photos)
    print(json.dumps(manifest, indent=2))
    print(
        f"\n{args.out}: {manifest['bundle_mib']} MiB, with the tree {manifest['total_mib']} of "
        f"{manifest['limit_mib']} MiB. Send it (docs/development.md, 'Checking on a lent GPU'):"
        '\n  run  command="python3 scripts/gpu/gpu_check.py --out $OUT"  carry=[".gpu-bundle"]'
        "  timeout_s=570"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
