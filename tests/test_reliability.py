"""Interrupted runs resume, bad input never crashes a run, failures lose nothing."""

import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nst_fast.data.datamodule import PhotoDataModule
from nst_fast.errors import NstFastError
from nst_fast.export import MULTI_STYLE_VERSION, load_model, save_model
from nst_fast.images import save_image
from nst_fast.models.transformer import transformer_net

from .conftest import ckpt_step, cli_env, make_photo, nst_fast, tiny_overrides


def start_training(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nst_fast", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cli_env(),
        preexec_fn=default_sigint,
        start_new_session=True,  # its own process group, for os.killpg
    )


def default_sigint() -> None:
    # A test run started in the background (`cmd &` in a script, nohup) hands SIGINT on
    # ignored, and Python then installs no KeyboardInterrupt handler: start the trainer
    # as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.fixture
def long_run(photo_folder, style_file, tmp_path):
    """Overrides for a run far longer than the tests let it go."""
    run_dir = tmp_path / "run"
    return run_dir, tiny_overrides(photo_folder, style_file, run_dir, steps=10_000)


@pytest.mark.slow
def test_sigkill_then_resume_continues_from_the_last_checkpoint(long_run):
    run_dir, overrides = long_run
    process = start_training(*overrides)
    wait_for(run_dir / "checkpoints" / "step=4.ckpt", process)
    process.kill()
    process.wait()
    # last.ckpt follows each periodic one; the kill may land between the two writes.
    last = ckpt_step(run_dir / "checkpoints" / "last.ckpt")
    assert last >= 2
    resumed = nst_fast(
        "train",
        *overrides[:-1],
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={last + 2}",
        "ckpt_path=last",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_model(run_dir / "model.pt")[1].step == last + 2
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") == last + 2


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)])
@pytest.mark.parametrize("to", ["main process", "process group"])
def test_sigterm_and_sigint_save_a_checkpoint_and_say_how_to_resume(long_run, sig, code, to):
    run_dir, overrides = long_run
    if to == "process group":
        # SLURM's scancel and pre-emption, systemd and Ctrl-C signal every process of
        # the run, the data loader's workers included.
        overrides = [*overrides, "data.num_workers=1"]
    process = start_training(*overrides)
    wait_for(run_dir / "checkpoints" / "step=2.ckpt", process)
    time.sleep(1.0)
    if to == "process group":
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # it must not go on beside the other tests
        raise
    assert process.returncode == code, output[-3000:]
    assert "resume with: nst-fast train" in output and "ckpt_path=last" in output
    assert "Traceback" not in output
    assert ckpt_step(run_dir / "checkpoints" / "last.ckpt") >= 2


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(long_run):
    run_dir, overrides = long_run
    good = nst_fast("train", *overrides, "trainer.max_steps=2")
    assert good.returncode == 0, good.stderr[-3000:]
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    bad = nst_fast(
        "train", *overrides, "trainer.max_steps=4", "loss.tv_weight=nan", "ckpt_path=last"
    )
    assert bad.returncode == 2
    assert "the loss became nan at step 2" in bad.stderr and "optim.lr" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert load_model(run_dir / "model.pt")[1].step == 2


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path) -> tuple[Path, int, int]:
    """Good photos of every awkward kind, and 32 bad files of 8 kinds (4 each)."""
    folder = tmp_path / "messy"
    folder.mkdir()
    photo = Image.new("RGB", (48, 40), (180, 90, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    good = {
        "gray.jpg": encoded(photo.convert("L"), "JPEG"),
        "cmyk.jpg": encoded(photo.convert("CMYK"), "JPEG"),
        "deep.png": encoded(photo.convert("I;16"), "PNG"),
        "alpha.png": encoded(photo.convert("RGBA"), "PNG"),
        "palette.png": encoded(photo.convert("P"), "PNG"),
        "rotated.jpg": encoded(photo, "JPEG", exif=exif),
        "plain.jpg": encoded(photo, "JPEG"),
        "plain.png": encoded(photo, "PNG"),
    }
    jpeg, png = good["plain.jpg"], good["plain.png"]
    bad = {
        "truncated_jpeg.jpg": jpeg[:100],
        "truncated_png.png": png[:60],
        "zero_bytes.jpg": b"",
        "text.jpg": b"this is a text file, not a photo\n" * 4,
        "random.png": bytes(range(256)) * 8,
        "bomb.png": png_header_only(30_000, 30_000),
        "garbage_after_header.jpeg": jpeg[:20] + b"\x00" * 500,
        "html.png": b"<html><body>404 not found</body></html>",
    }
    for name, data in good.items():
        (folder / name).write_bytes(data)
    for copy in range(4):
        for name, data in bad.items():
            (folder / f"{copy}_{name}").write_bytes(data)
    return folder, len(good), 4 * len(bad)


def test_messy_folder_yields_every_good_photo_and_skips_every_bad_one(messy_folder):
    folder, n_good, n_bad = messy_folder
    dm = PhotoDataModule(str(folder), image_size=16, batch_size=8, num_workers=0)
    images, skipped = 0, []
    for batch in dm.train_dataloader():
        images += len(batch["image"])
        skipped += batch["skipped"]
    assert n_bad >= 30
    assert (images, len(skipped)) == (n_good, n_bad)
    kinds = {Path(message.split(":")[0]).name.split("_", 1)[1] for message in skipped}
    assert len(kinds) == 8
    assert sum("bomb.png: too large" in message for message in skipped) == 4


@pytest.mark.slow
def test_training_on_a_messy_folder_proceeds_and_reports_the_skipped(
    messy_folder, style_file, tmp_path
):
    folder, _, n_bad = messy_folder
    overrides = tiny_overrides(folder, style_file, tmp_path / "run", steps=6)
    result = nst_fast("train", *overrides, "data.batch_size=8", "trainer.log_every_n_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert f"epoch 0: skipped {n_bad} unreadable photo(s)" in output
    assert (tmp_path / "run" / "model.pt").is_file()
    # TensorBoard's count runs on between the logged steps (batches of 8 skip fewer).
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert events.Scalars("data/skipped")[-1].value >= n_bad


@pytest.mark.slow
@pytest.mark.parametrize("value", ["data.image_size=0", "data.image_size=8", "data.batch_size=0"])
def test_non_positive_sizes_stop_before_any_work(photo_folder, style_file, tmp_path, value):
    result = nst_fast("train", *tiny_overrides(photo_folder, style_file, tmp_path / "run"), value)
    assert result.returncode == 2 and value.split("=")[0] in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_disk_full_while_exporting_keeps_the_previous_model(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_model(transformer_net(channels=(8, 16), residual_blocks=1), path, style="a", step=1)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_model(transformer_net(channels=(8, 16), residual_blocks=1), path, style="b", step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_disk_full_while_saving_an_image_keeps_the_previous_one(tmp_path, monkeypatch):
    path = save_image(make_photo((8, 8), 0), tmp_path / "out.jpg")
    before = path.read_bytes()

    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError):
        save_image(make_photo((8, 8), 1), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.jpg"]


def test_a_model_from_another_format_version_names_both_versions(tmp_path):
    path = tmp_path / "old.pt"
    save_model(transformer_net(channels=(8, 16), residual_blocks=1), path, style="a", step=1)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = MULTI_STYLE_VERSION + 1
    payload["nst_fast_version"] = "9.0.0"
    torch.save(payload, path)
    with pytest.raises(NstFastError, match=rf"version {MULTI_STYLE_VERSION + 1}.*9\.0\.0.*reads"):
        load_model(path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", "a damaged or truncated PyTorch file"),
        ("a photo", "not a PyTorch file"),
    ],
)
def test_a_damaged_or_foreign_model_file_gets_a_short_reason(tmp_path, damage, reason):
    path = tmp_path / "model.pt"
    save_model(transformer_net(channels=(8, 16), residual_blocks=1), path, style="a", step=1)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        Image.new("RGB", (16, 16), "teal").save(path, format="JPEG")
    with pytest.raises(NstFastError) as caught:
        load_model(path)
    message = str(caught.value)
    assert f"not an nst-fast model ({reason})" in message
    assert "\n" not in message and "weights_only" not in message


def test_model_files_never_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "nst-fast-model", "x": Payload()}, path)
    with pytest.raises(NstFastError, match=r"not an nst-fast model \(it holds Python objects"):
        load_model(path)
    assert not (tmp_path / "pwned").exists()


# The second case: a run checkpointed on a machine with more cores goes on on one with fewer.
@pytest.mark.slow
@pytest.mark.parametrize(("before", "after"), [(0, 0), (2, 1)], ids=["same", "fewer-workers"])
def test_resume_mid_epoch_continues_the_same_data_order(
    photo_folder, style_file, tmp_path, before, after
):
    def run(name: str, steps: int, workers: int, *extra: str) -> list[str]:
        probe = tmp_path / f"probe_{name}_{steps}"
        result = nst_fast(
            "train",
            *tiny_overrides(photo_folder, style_file, tmp_path / name, steps=steps),
            "+callbacks.probe._target_=tests.probes.RecordRank",
            f"+callbacks.probe.folder={probe}",
            f"data.num_workers={workers}",
            *extra,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((probe / "rank0.json").read_text())["seen"]

    # 8 photos, batch 2: 4 steps an epoch; the checkpoint at step 2 is mid-epoch.
    straight = run("straight", 8, before)
    run("interrupted", 2, before)
    resumed = run("interrupted", 8, after, "ckpt_path=last")
    assert len(straight) == 16 and len(resumed) == 12
    assert resumed == straight[4:]


@pytest.mark.slow
def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(
    photo_folder, style_file, tmp_path, monkeypatch
):
    from nst_fast.config import compose
    from nst_fast.training.train import train

    run_dir = tmp_path / "run"
    overrides = [
        o
        for o in tiny_overrides(photo_folder, style_file, run_dir, steps=2)
        if not o.startswith("hydra.")
    ]
    train(compose(overrides), run_dir)
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    longer = [o for o in overrides if not o.startswith("trainer.max_steps=")]
    cfg = compose([*longer, "trainer.max_steps=4", "ckpt_path=last"])
    with pytest.raises(OSError, match="No space left"):
        train(cfg, run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert not list((run_dir / "checkpoints").glob("*.tmp")) and not list(
        (run_dir / "checkpoints").glob("step=4*")
    )


def test_written_files_get_ordinary_permissions_not_the_temp_files_private_ones(tmp_path):
    from nst_fast.files import NEW_FILE_MODE, atomic_write

    new = tmp_path / "new.txt"
    with atomic_write(new) as tmp:
        tmp.write_text("a")
    assert new.stat().st_mode & 0o777 == NEW_FILE_MODE
    shared = tmp_path / "shared.txt"
    shared.write_text("old")
    shared.chmod(0o664)
    with atomic_write(shared) as tmp:
        tmp.write_text("b")
    assert shared.stat().st_mode & 0o777 == 0o664
