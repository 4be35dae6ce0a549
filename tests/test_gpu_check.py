"""scripts/gpu/gpu_check.py and scripts/gpu/gpu_bundle.py: the GPU check rehearsed on the CPU, so
that it cannot rot between the rare loans of a GPU, and the parts each section relies on."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)  # for its dataclasses
    spec.loader.exec_module(module)
    return sys.modules[name]


gpu_check = load_script("gpu_check")

# The parts the script puts on sys.path, each at its home.
from gpu_check_parts.context import (  # noqa: E402
    FULL_WEIGHTS,
    PACKED_WEIGHTS,
    REHEARSAL,
    Context,
    TimeBoxExceeded,
)
from gpu_check_parts.cuda_tests import cuda_test_ids  # noqa: E402
from gpu_check_parts.environment import unpack_weights  # noqa: E402
from gpu_check_parts.running import run_command  # noqa: E402
from gpu_check_parts.speed import benchmark_rows  # noqa: E402
from gpu_check_parts.training import profiler_rows  # noqa: E402


@pytest.mark.slow
def test_the_rehearsal_runs_every_section_on_the_cpu_and_writes_the_report(tmp_path) -> None:
    out = tmp_path / "report"
    argv = [sys.executable, str(SCRIPTS / "gpu_check.py"), "--rehearse", "--out", str(out)]
    result = subprocess.run(
        [*argv, "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=900
    )
    log = out / "gpu_check.log"
    tail = log.read_text()[-4000:] if log.is_file() else ""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:] + tail
    report = json.loads((out / "gpu_check.json").read_text())
    names = [name for name, *_ in gpu_check.SECTIONS]
    assert list(report["sections"]) == names
    assert {s["name"]: s["status"] for s in report["sections"].values()} == dict.fromkeys(
        names, "ok"
    )
    assert report["meta"]["mode"].startswith("rehearsal")
    markdown = (out / "gpu_check.md").read_text()
    for _, title, *_ in gpu_check.SECTIONS:
        assert f"## {title}" in markdown
    sections = report["sections"]
    assert sections["benchmark"]["data"]["rows"][0]["figure"].startswith("train 16px batch 2")
    assert sections["training_run"]["data"]["steps"] == REHEARSAL.run_steps
    assert sections["stylize_video"]["data"]["written_frames"] == REHEARSAL.clip[0]


def fake_context(tmp_path: Path) -> "Context":
    return Context(
        out=tmp_path,
        work=tmp_path,
        rehearse=True,
        sizes=REHEARSAL,
        device="cpu",
        shared=None,
        log_path=tmp_path / "gpu_check.log",
        env={},
    )


def test_a_failing_or_overrunning_section_is_recorded_and_the_next_one_still_runs(
    tmp_path, monkeypatch
) -> None:
    def fails(ctx, sec):
        raise ValueError("no such thing")

    def overruns(ctx, sec):
        time.sleep(5)

    def works(ctx, sec):
        sec.summary = "fine"

    monkeypatch.setattr(
        gpu_check,
        "SECTIONS",
        [
            ("a", "A", fails, 10, 10),
            ("b", "B", overruns, 10, 1),
            ("c", "C", works, 10, 10),
        ],
    )
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0)
    ctx = fake_context(tmp_path)
    sections = gpu_check.run_sections(ctx, None, time.monotonic())
    assert [(s.status, s.error or s.summary) for s in sections] == [
        ("failed", "ValueError: no such thing"),
        ("timed out", "ran past its time box of 1 s"),
        ("ok", "fine"),
    ]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| A | failed |" in markdown and "| C | ok |" in markdown
    assert "ValueError: no such thing" in (tmp_path / "gpu_check.log").read_text()


def test_a_command_past_its_time_is_ended_and_named(tmp_path) -> None:
    ctx = fake_context(tmp_path)
    ctx.section_end = time.monotonic() + 60
    start = time.monotonic()
    with pytest.raises(TimeBoxExceeded, match="ran past 2 s"):
        run_command(ctx, [sys.executable, "-c", "import time; time.sleep(30)"], 2)
    assert time.monotonic() - start < 10


def test_the_cuda_tests_are_found_by_their_skip_whatever_its_form(tmp_path) -> None:
    ids = cuda_test_ids(SCRIPTS.parents[1] / "tests")
    assert (
        "tests/test_fast.py::"
        "test_on_a_gpu_the_accelerated_networks_equal_the_plain_one_in_value_and_gradients"
    ) in ids
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_a.py").write_text(
        "import pytest, torch\n"
        "needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='gpu')\n"
        "@needs_gpu\ndef test_marked(): pass\n"
        "def test_skips():\n    if not torch.cuda.is_available():\n        pytest.skip('gpu')\n"
        "def test_plain(): pass\n"
    )
    (tests / "test_b.py").write_text(
        "import pytest, torch\n"
        "pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='gpu')\n"
        "def test_whole(): pass\n"
    )
    assert cuda_test_ids(tests) == [
        "tests/test_a.py::test_marked",
        "tests/test_a.py::test_skips",
        "tests/test_b.py::test_whole",
    ]


def test_simple_profiler_rows_are_read_out_of_a_training_run() -> None:
    output = "\n".join(
        [
            "|  Action  \t|  Mean duration (s)\t|  Num calls \t|  Total time (s)\t|  Percentage |",
            "|  run_training_batch  \t|  0.05  \t|  300  \t|  15.0  \t|  60.0  \t|",
            "|  [_TrainingEpochLoop].train_dataloader_next\t|  0.01\t|  300\t|  3.0\t|  12\t|",
            "|  [Callback]ExportModel.on_fit_end  \t|  0.2 \t|  1 \t|  0.2 \t|  1 \t|",
        ]
    )
    rows = profiler_rows(output)
    assert rows == {
        "run_training_batch": {"mean_s": 0.05, "calls": 300, "total_s": 15.0},
        "[_TrainingEpochLoop].train_dataloader_next": {
            "mean_s": 0.01,
            "calls": 300,
            "total_s": 3.0,
        },
    }


def test_benchmark_rows_put_fast_beside_plain_and_reference_each_the_better_way_up() -> None:
    def run(rows):
        return {"setups": {"cuda optimized": {"rows": rows}}}

    fast = [
        {"figure": "train", "unit": "img/s", "project": 30.0, "reference": 10.0},
        {
            "figure": "stylize",
            "unit": "s/img",
            "project": 0.1,
            "reference": 0.4,
            "higher_is_better": False,
        },
    ]
    plain = [
        {"figure": "train", "unit": "img/s", "project": 20.0},
        {"figure": "stylize", "unit": "s/img", "project": 0.2, "higher_is_better": False},
    ]
    rows = benchmark_rows({"fast": run(fast), "plain": run(plain)})
    assert [(r["figure"], r["fast_over_plain"], r["speedup"]) for r in rows] == [
        ("train", 1.5, 3.0),
        ("stylize", 2.0, 4.0),
    ]


def test_the_packed_vgg_weights_unpack_to_a_file_both_loaders_take(tmp_path) -> None:
    from nst_fast.losses.vgg import vgg_features

    torch.manual_seed(1)
    original = vgg_features("vgg16").state_dict()
    packed = {k: v.half() for k, v in original.items() if int(k.split(".")[0]) <= 21}
    (tmp_path / "weights").mkdir()
    torch.save(packed, tmp_path / "weights" / PACKED_WEIGHTS)
    full = unpack_weights(tmp_path)
    assert full == tmp_path / "weights" / FULL_WEIGHTS
    features = vgg_features("vgg16")
    features.load_state_dict(torch.load(full, weights_only=True))  # strict, as both load it
    assert torch.equal(features[21].weight, packed["21.weight"].float())
    assert features[21].weight.dtype == torch.float32
    assert unpack_weights(tmp_path) == full  # once unpacked, kept


def test_the_bundle_carries_what_the_machines_image_lacks_and_nothing_it_has() -> None:
    gpu_bundle = load_script("gpu_bundle")
    missing = gpu_bundle.missing_packages()
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "torchdata", "av"} <= set(missing)
    assert not set(missing) & {"torch", "torchvision", "pytorch-lightning", "onnxruntime", "numpy"}


def test_the_bundle_takes_photos_in_name_order_while_they_fit(tmp_path) -> None:
    gpu_bundle = load_script("gpu_bundle")
    source = tmp_path / "coco"
    source.mkdir()
    for name, size in (("b.jpg", 300), ("a.jpg", 500), ("c.jpg", 100)):
        (source / name).write_bytes(b"x" * size)
    assert gpu_bundle.add_photos(source, tmp_path / "bundle", room=850, most=128) == 2
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["a.jpg", "b.jpg"]
