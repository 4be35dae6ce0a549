"""scripts/bench/benchmark.py: its options, its Markdown table, and its training step on the
current module (the figures themselves come only from running it)."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "benchmark.py"
spec = importlib.util.spec_from_file_location("nst_benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(spec)
sys.modules.setdefault("nst_benchmark", benchmark)  # for its dataclasses
spec.loader.exec_module(benchmark)

# The parts the script puts on sys.path, each figure's code at its home.
from benchmark_parts import paths as shared  # noqa: E402
from benchmark_parts.flops import Peaks, stylize_flops, training_flops_per_image  # noqa: E402
from benchmark_parts.paths import LATEST_MD  # noqa: E402
from benchmark_parts.report import Row, cpu_name, markdown_section, print_table, write_markdown  # noqa: E402
from benchmark_parts.run import Run, command_line, header_lines  # noqa: E402
from benchmark_parts.setups import Setup, setup_from_spec, setup_spec, setups  # noqa: E402
from benchmark_parts.stylizing import make_transformer  # noqa: E402
from benchmark_parts.training import make_module, random_photos, train_step_fn  # noqa: E402


def test_plain_switches_the_speed_work_off_in_every_setup() -> None:
    fast = setups(benchmark.parse_args(["--device", "cpu"]))
    plain = setups(benchmark.parse_args(["--device", "cpu", "--plain"]))
    assert [s.fast for s in fast] == [True]
    assert [s.fast for s in plain] == [False]
    assert "plain" in plain[0].describe() and "plain" not in fast[0].describe()
    # the memory children rebuild the same set-up, mode included
    spec = setup_spec(plain[0])
    assert setup_from_spec(spec) == plain[0]


def test_the_style_pyramid_option_reaches_the_setup_and_its_children() -> None:
    [setup] = setups(benchmark.parse_args(["--device", "cpu", "--style-scales", "1", "2"]))
    assert setup.style_scales == (1, 2)
    assert "style scales 1,2" in setup.describe()
    assert setup_from_spec(setup_spec(setup)) == setup
    module, _ = make_module(setup, "random")
    assert module.criteria[0].style_scales == {1.0: 1.0, 2.0: 1.0}


def test_the_antialias_option_reaches_the_trained_and_the_stylized_network() -> None:
    [setup] = setups(benchmark.parse_args(["--device", "cpu", "--antialias"]))
    assert setup.antialias and "anti-aliased network" in setup.describe()
    assert setup_from_spec(setup_spec(setup)) == setup
    module, _ = make_module(setup, "random")
    assert module.transformer.config.antialias
    assert make_transformer(setup).config.antialias
    assert benchmark.markdown_path(benchmark.parse_args(["--antialias"])) is None


def test_the_pyramid_counts_its_smaller_vgg_passes_in_the_work_of_a_step() -> None:
    single = training_flops_per_image(64, reference=False)
    pyramid = training_flops_per_image(64, reference=False, style_scales=(1, 2, 4))
    # VGG up to relu4_3 again on a quarter and a sixteenth of the pixels, backward included
    assert single < pyramid < 1.5 * single


def test_the_anti_aliased_networks_work_counts_its_filters() -> None:
    # Fixed depthwise filters beside the convolutions: more work, but not much more.
    for count in (
        lambda aa: stylize_flops(64, aa),
        lambda aa: training_flops_per_image(64, False, antialias=aa),
    ):
        plain, smooth = count(False), count(True)
        assert plain < smooth < 1.05 * plain


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], LATEST_MD),
        (["--quick"], None),
        (["--plain"], None),
        (["--no-write-md"], None),
        (["--quick", "--write-md", "out.md"], Path("out.md")),
        (["--plain", "--write-md", "plain.md"], Path("plain.md")),
        (["--styles", "4"], None),
        (["--style-scales", "1", "2", "4"], None),
    ],
)
def test_markdown_goes_to_the_latest_file_only_from_a_full_run(argv, expected) -> None:
    assert benchmark.markdown_path(benchmark.parse_args(argv)) == expected


def test_a_quick_run_never_replaces_the_latest_file() -> None:
    args = benchmark.parse_args(["--quick", "--write-md", str(LATEST_MD)])
    with pytest.raises(SystemExit, match="--quick"):
        benchmark.markdown_path(args)


def test_markdown_says_generated_when_where_how_and_which_mode(tmp_path: Path) -> None:
    args = benchmark.parse_args(["--plain", "--no-peer"])
    run = Run(args, command_line(["--plain", "--no-peer"]), "random", False)
    run.header = header_lines(run, "freed memory kept")
    setup = setups(benchmark.parse_args(["--device", "cpu", "--plain"]))[0]
    rows = [
        Row("train 256px batch 4", 2.0, 1.0, "img/s", target=1.7),
        Row("stylize 512px", 0.25, 0.5, "s/img", higher_is_better=False),
        Row("data pipeline, x", 50.0, unit="img/s", notes=["25x the need"]),
    ]
    run.sections.append(markdown_section(setup, rows, Peaks({"best": 10.0})))
    path = tmp_path / "latest.md"
    write_markdown(path, run)
    text = path.read_text()
    assert "Generated by `python scripts/bench/benchmark.py`; do not edit" in text
    assert " UTC" in text and cpu_name() in text and torch.__version__ in text
    assert "- gpu: " in text
    assert "`python scripts/bench/benchmark.py --plain --no-peer`" in text
    assert "nst-fast plain (--plain)" in text
    assert "| train 256px batch 4 | img/s | 2.00 | 1.00 | 2.00 | 2.00x | 1.7x ok |" in text
    assert "| stylize 512px | s/img | 0.250 | 0.500 | 0.500 | 2.00x |" in text
    assert "- data pipeline, x: 25x the need" in text


def test_printed_table_keeps_its_columns(capsys) -> None:
    print_table([Row("stylize 512px", 0.5, 1.0, "s/img", False)], 10.0)
    head, rule, row = capsys.readouterr().out.splitlines()
    assert head.split()[:4] == ["figure", "unit", "project", "reference"]
    assert len(rule) == len(head)
    assert row.split() == ["stylize", "512px", "s/img", "0.500", "1.00", "0.500", "2.00x"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*self.log")
def test_plain_training_step_runs_the_plain_network_train_builds() -> None:
    """The step as the benchmark times it, on the module ``nst-fast train`` builds."""
    setup = Setup("cpu", "cpu", channels_last=True, fast=False)
    module, optimizer = make_module(setup, "random")
    assert module.step_net is module.transformer
    weight = next(module.transformer.parameters())
    before = weight.detach().clone()
    step = train_step_fn(setup, module, optimizer, random_photos(1, 32, "cpu"))
    step()
    assert not torch.equal(before, weight)


def test_styles_times_the_step_of_a_network_of_several_styles_each_in_turn(tmp_path) -> None:
    (setup,) = setups(benchmark.parse_args(["--device", "cpu", "--styles", "3"]))
    assert setup.styles == 3 and "3 styles" in setup.describe()
    setup.fast = False
    module, optimizer = make_module(setup, "random")
    assert module.transformer.styles == 3
    step = train_step_fn(setup, module, optimizer, random_photos(1, 32, "cpu"))
    step()  # the step of the first style
    assert module.transformer.encoder[0][2].weight.grad.abs().sum(1).gt(0).tolist() == [
        True,
        False,
        False,
    ]


def test_cuda_setups_picks_the_set_ups_and_compile_off_makes_the_optimized_one_eager_bf16(
    monkeypatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (8, 0))  # an A100
    both = setups(benchmark.parse_args(["--device", "cuda"]))
    assert [s.name for s in both] == ["cuda eager fp32", "cuda optimized"]
    argv = ["--device", "cuda", "--cuda-setups", "optimized", "--compile", "off", "--plain"]
    (setup,) = setups(benchmark.parse_args(argv))
    assert (setup.device, setup.compile, setup.amp) == ("cuda", (), torch.bfloat16)
    assert setup.channels_last and not setup.fast
    assert "compile=off" in setup.describe() and "bfloat16 autocast" in setup.describe()


def test_shared_reads_the_reference_weights_and_photos_from_a_copy_and_tells_the_children(
    tmp_path, monkeypatch
) -> None:
    for name in ("SHARED", "PEER_BENCH", "PEER_DIR", "SHARED_WEIGHTS", "COCO"):
        monkeypatch.setattr(shared, name, getattr(shared, name))
    monkeypatch.delenv(shared.SHARED_ENV, raising=False)
    shared.use_shared(tmp_path / "bundle")
    bundle = (tmp_path / "bundle").resolve()
    read = (shared.PEER_BENCH, shared.SHARED_WEIGHTS, shared.COCO)
    expected = ("bench/peer_bench.py", "weights/vgg16_imagenet_features.pt", "coco128/train2017")
    assert read == tuple(bundle / path for path in expected)
    assert os.environ[shared.SHARED_ENV] == str(bundle)
