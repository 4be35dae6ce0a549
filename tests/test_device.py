"""Device, precision and allocator choices."""

import subprocess
import sys

import pytest
import torch

from nst_fast import device
from nst_fast.device import (
    cpu_has_native_bf16,
    inference_dtype,
    loader_workers,
    pick_device,
    training_precision,
)
from nst_fast.errors import NstFastError

# Allocates, touches and frees a 64 MiB tensor a dozen times, as a training loop does with
# its large activations; prints the page faults of the last two rounds.
REUSE_PROBE = """
import resource, sys, torch
from nst_fast.device import keep_freed_memory
tuned = sys.argv[1] == "keep" and keep_freed_memory()
for _ in range(10):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    torch.ones(16 * 2**20)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_a_reallocation(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", REUSE_PROBE, mode], capture_output=True, text=True, check=True
    )
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults():
    tuned, kept = faults_of_a_reallocation("keep")
    if tuned != "True":
        pytest.skip("not glibc")
    _, default = faults_of_a_reallocation("default")
    pages = 2 * 64 * 2**20 // 4096
    assert default > pages // 2  # glibc unmapped the block: every page faults again
    assert kept < pages // 10


def test_cpu_inference_is_bf16_only_where_the_cpu_computes_bf16_natively(cpu_bf16):
    expected = torch.bfloat16 if cpu_bf16 else torch.float32
    assert inference_dtype(torch.device("cpu")) == expected
    assert inference_dtype(torch.device("cpu"), half=False) == torch.float32


def test_auto_picks_what_is_there():
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize(
    ("name", "message"),
    [("gpu0", "not a device name"), ("meta", "not a device nst-fast runs on")],
)
def test_a_device_nothing_runs_on_is_named(name, message):
    with pytest.raises(NstFastError, match=message):
        pick_device(name)


def test_cpu_training_is_bf16_mixed_only_where_the_cpu_computes_bf16_natively(
    monkeypatch, cpu_bf16
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    expected = "bf16-mixed" if cpu_bf16 else "32-true"
    assert training_precision("cpu") == training_precision("auto") == expected


def fake_gpus(monkeypatch, *capabilities: tuple[int, int]) -> list[int]:
    """CUDA devices of these compute capabilities, as torch reports them; returns the
    indices whose capability is asked, in order. ``is_bf16_supported`` answers True, as
    torch 2.3 and later does on every card (by emulation below 8.0)."""
    asked = []

    def capability(device=None) -> tuple[int, int]:
        index = device if isinstance(device, int) else torch.device(device or "cuda").index
        index = torch.cuda.current_device() if index is None else index
        asked.append(index)
        return capabilities[index]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    return asked


T4, V100, A100, H100 = (7, 5), (7, 0), (8, 0), (9, 0)


@pytest.mark.parametrize(
    ("card", "precision", "dtype"),
    [
        (T4, "16-mixed", torch.float16),
        (V100, "16-mixed", torch.float16),
        (A100, "bf16-mixed", torch.bfloat16),
        (H100, "bf16-mixed", torch.bfloat16),
    ],
    ids=["T4", "V100", "A100", "H100"],
)
def test_gpus_before_ampere_train_and_stylize_in_fp16_though_torch_offers_them_bf16(
    monkeypatch, card, precision, dtype
):
    fake_gpus(monkeypatch, card)
    assert training_precision("auto") == training_precision("gpu") == precision
    assert inference_dtype(torch.device("cuda")) == inference_dtype(torch.device("cuda:0")) == dtype
    assert inference_dtype(torch.device("cuda"), half=False) == torch.float32


def test_the_precision_is_that_of_the_card_in_use_not_of_the_first(monkeypatch):
    asked = fake_gpus(monkeypatch, A100, T4)
    assert inference_dtype(torch.device("cuda:1")) == torch.float16
    assert set(asked) == {1}
    asked.clear()
    assert training_precision("gpu", [1]) == "16-mixed"
    assert set(asked) == {1}
    assert training_precision("gpu", "0,") == training_precision("gpu", 1) == "bf16-mixed"


def test_several_cards_train_in_what_every_one_of_them_computes_in(monkeypatch):
    fake_gpus(monkeypatch, A100, T4)
    assert training_precision("gpu", 2) == training_precision("auto", "auto") == "16-mixed"
    assert training_precision("gpu", -1) == "16-mixed"


def test_devices_lightning_will_refuse_leave_the_precision_to_the_cards_there_are(monkeypatch):
    fake_gpus(monkeypatch, A100)
    assert training_precision("gpu", 4) == training_precision("gpu", [3]) == "bf16-mixed"


def test_trainer_cpu_stays_on_the_cpu_precision_beside_a_gpu(monkeypatch):
    fake_gpus(monkeypatch, T4)
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert training_precision("auto") == "16-mixed"
    assert training_precision("cpu") == "32-true"


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_native_bf16_is_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.delenv(device.CPU_BF16_OVERRIDE, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_native_bf16() is native


@pytest.mark.parametrize(("value", "native"), [("1", True), ("0", False)])
@pytest.mark.parametrize("hardware", [True, False])
def test_the_environment_answers_the_native_bf16_question_in_place_of_the_cpu(
    monkeypatch, value, native, hardware
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: hardware)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: hardware)
    monkeypatch.setenv("NST_FAST_CPU_BF16", value)
    assert cpu_has_native_bf16() is native


def test_an_environment_answer_that_is_not_1_or_0_is_named(monkeypatch):
    monkeypatch.setenv("NST_FAST_CPU_BF16", "yes")
    with pytest.raises(NstFastError, match="NST_FAST_CPU_BF16=yes: expected 1"):
        cpu_has_native_bf16()


@pytest.mark.parametrize(("cores", "wanted", "workers"), [(2, 4, 2), (16, 4, 4), (2, 0, 0)])
def test_data_loading_takes_no_more_processes_than_there_are_cores(
    monkeypatch, cores, wanted, workers
):
    monkeypatch.setattr(
        device.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False
    )
    assert loader_workers(wanted) == workers


@pytest.mark.parametrize(
    ("cores", "processes", "workers"), [(16, 8, 2), (64, 8, 4), (4, 8, 1), (16, 1, 4)]
)
def test_the_processes_of_one_node_share_its_cores_among_their_loaders(
    monkeypatch, cores, processes, workers
):
    monkeypatch.setattr(
        device.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False
    )
    assert loader_workers(4, processes) == workers
