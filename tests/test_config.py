"""Every config group option composes against the structured schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from nst_fast.config import compose as compose_or_fail
from nst_fast.config import config_dir, register
from nst_fast.errors import NstFastError

from .test_device import A100, T4, fake_gpus

register()
GROUPS = ["style", "loss", "model", "data", "trainer", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_with(overrides: list[str]):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize(
    "group,option", [(group, option) for group in GROUPS for option in options(group)]
)
def test_every_option_composes(group, option):
    cfg = compose_with([f"{group}={option}"])
    assert cfg.style.name and cfg.loss.style_layers and cfg.model.channels
    OmegaConf.to_container(cfg, resolve=False, throw_on_missing=True)


def test_the_four_paintings_and_a_generated_style_are_available():
    assert {"starry_night", "wave", "the_scream", "composition_vii", "mosaic"} <= set(
        options("style")
    )


def test_default_loss_is_johnsons_vgg16_setting():
    cfg = compose_with([])
    assert cfg.loss.network == "vgg16" and cfg.loss.content_layer == "relu2_2"
    assert list(cfg.loss.style_layers) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def test_vgg19_uses_gatys_layers():
    cfg = compose_with(["loss=vgg19"])
    assert cfg.loss.content_layer == "relu4_2"
    assert list(cfg.loss.style_layers) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def test_johnson2016_experiment_is_the_papers_recipe():
    cfg = compose_with(["experiment=johnson2016"])
    assert cfg.data.image_size == 256 and cfg.data.batch_size == 4
    assert cfg.trainer.max_steps == 40000 and cfg.optim.lr == 1e-3


def test_demo_experiment_uses_bundled_photos_and_a_generated_style():
    cfg = compose_with(["experiment=demo"])
    assert cfg.style.image.startswith("generated:")
    assert Path(cfg.data.root).is_dir()  # the resolver writes scikit-image's photos
    train, held_out = (
        {p.stem for p in Path(d).iterdir()} for d in (cfg.data.root, cfg.data.val_root)
    )
    assert len(train) == 4 and held_out == {"coffee", "chelsea"} and not train & held_out


def test_any_key_can_be_overridden_and_styles_added_by_path():
    cfg = compose_with(["style.image=my.jpg", "data.image_size=512", "loss.style_weight=3"])
    assert cfg.style.image == "my.jpg" and cfg.data.image_size == 512
    assert cfg.loss.style_weight == 3.0


@pytest.mark.parametrize(("cores", "coco", "sample"), [(2, 2, 2), (1, 1, 1), (8, 4, 2)])
def test_data_loads_in_at_most_one_process_per_core(monkeypatch, cores, coco, sample):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert compose_with(["data=coco"]).data.num_workers == coco
    assert compose_with(["data=sample"]).data.num_workers == sample
    assert compose_with(["data=coco", "data.num_workers=6"]).data.num_workers == 6


@pytest.mark.parametrize("trainer", ["auto", "gpu", "ddp", "slurm", "torchrun"])
@pytest.mark.parametrize(
    ("card", "precision"), [(T4, "16-mixed"), (A100, "bf16-mixed")], ids=["T4", "A100"]
)
def test_every_gpu_trainer_trains_in_what_its_cards_compute_in(
    monkeypatch, trainer, card, precision
):
    fake_gpus(monkeypatch, *[card] * 8)
    assert compose_with([f"trainer={trainer}"]).trainer.precision == precision


def test_the_precision_follows_the_cards_trainer_devices_names(monkeypatch):
    asked = fake_gpus(monkeypatch, A100, T4)
    assert compose_with(["trainer=gpu", "trainer.devices=[1]"]).trainer.precision == "16-mixed"
    assert set(asked) == {1}
    assert compose_with(["trainer=gpu", "trainer.devices=[0]"]).trainer.precision == "bf16-mixed"
    assert compose_with(["trainer=ddp", "trainer.devices=2"]).trainer.precision == "16-mixed"


def test_a_given_precision_is_kept_and_the_cpu_trainer_stays_on_the_cpu_beside_a_gpu(
    monkeypatch,
):
    fake_gpus(monkeypatch, T4)
    monkeypatch.setattr("nst_fast.device.cpu_has_native_bf16", lambda: False)
    assert compose_with(["trainer=gpu", "trainer.precision=32-true"]).trainer.precision == "32-true"
    assert compose_with(["trainer=cpu"]).trainer.precision == "32-true"
    assert compose_with(["trainer=auto", "trainer.accelerator=cpu"]).trainer.precision == "32-true"


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "slurm", "torchrun"])
def test_gpu_trainers_compose_and_resolve_on_a_machine_without_one(monkeypatch, trainer):
    # `nst-fast train trainer=gpu --cfg job --resolve` shows the config anywhere.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("nst_fast.device.cpu_has_native_bf16", lambda: False)
    settings = OmegaConf.to_container(compose_with([f"trainer={trainer}"]).trainer, resolve=True)
    assert settings["precision"] == "32-true"


@pytest.mark.parametrize(
    ("trainer", "cores", "workers"),
    [
        (["trainer=gpu"], 16, 4),
        (["trainer=ddp"], 16, 2),
        (["trainer=slurm"], 16, 2),
        (["trainer=torchrun"], 64, 4),
        (["trainer=gpu", "trainer.devices=[2,5]"], 4, 2),
        (["trainer=ddp", "trainer.devices=3"], 2, 1),
        (["trainer=cpu", "trainer.devices=2", "+trainer.strategy=ddp"], 4, 2),
    ],
)
def test_the_training_processes_of_a_node_share_its_cores_among_their_data_loaders(
    monkeypatch, trainer, cores, workers
):
    fake_gpus(monkeypatch, *[A100] * 8)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert compose_with(["data=coco", *trainer]).data.num_workers == workers
    assert compose_with(["data=coco", *trainer, "data.num_workers=6"]).data.num_workers == 6


def test_misspelt_keys_and_wrong_types_fail_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_with(["data.imgsize=3"])
    with pytest.raises(ConfigCompositionException):
        compose_with(["data.image_size=big"])


def test_unknown_style_lists_the_available_ones():
    with pytest.raises(ConfigCompositionException, match="starry_night"):
        compose_with(["style=nope"])


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("optim.lr=abc", "optim.lr=abc (Value 'abc' of type 'str' could not be converted"),
        ("data.imgsize=3", "use +data.imgsize=3 (Key 'imgsize' not in 'DataConfig')"),
        ("style=nope", "Available options in 'style': composition_vii, mosaic, starry_night"),
        ("model.channels=[1", "model.channels=[1: no viable alternative at input"),
    ],
)
def test_a_bad_override_is_reported_in_one_line_naming_it(override, says):
    with pytest.raises(NstFastError) as error:
        compose_or_fail([override])
    assert says in str(error.value)
    assert "\n" not in str(error.value) and "search path" not in str(error.value)


def schema_defaults() -> list[tuple[str, object]]:
    """(dataclass.field, default) of every schema field that carries a value of its own."""
    from dataclasses import MISSING as NO_DEFAULT
    from dataclasses import fields

    from nst_fast import config
    from nst_fast.models.transformer import TransformerConfig

    schemas = [
        config.Config,
        config.StyleConfig,
        config.LossConfig,
        config.DataConfig,
        config.OptimConfig,
        config.ModelConfig,
        TransformerConfig,
    ]
    found = []
    for schema in schemas:
        for f in fields(schema):
            default = f.default_factory() if f.default_factory is not NO_DEFAULT else f.default
            if default not in (NO_DEFAULT, "???", None, {}, []):
                found.append((f"{schema.__name__}.{f.name}", default))
    return found


def test_the_schema_holds_types_only_so_every_default_lives_in_conf():
    assert schema_defaults() == []


def test_the_python_builder_builds_the_network_nst_fast_train_builds():
    from nst_fast.models.transformer import default_transformer_config

    composed = OmegaConf.to_container(compose_with([]).model, resolve=True)
    # model.init says where training starts, not what the network is
    assert {**default_transformer_config().to_dict(), "init": None} == composed
    assert composed["norm_scope"] == "residual" and composed["output"] == "tanh"


def test_a_value_holding_an_equals_sign_is_one_line_saying_how_to_quote_it():
    with pytest.raises(NstFastError) as err:
        compose_or_fail(["ckpt_path=runs/a/step=1000.ckpt"])
    assert "a value holding '=' needs Hydra's quotes: \"KEY='VALUE'\"" in str(err.value)
    quoted = compose_or_fail(["ckpt_path='runs/a/step=1000.ckpt'"])
    assert quoted.ckpt_path == "runs/a/step=1000.ckpt"
