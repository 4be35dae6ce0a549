"""The config files in ``conf/``: where they live, one group option's values, and the
``nst_fast.*`` resolvers their values call.

Below the schema (``nst_fast.config``) and the network (``nst_fast.models.transformer``),
which both read values from here: the network its trained defaults, the schema the styles
of ``styles=[...]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from omegaconf import DictConfig, ListConfig, OmegaConf

from nst_fast.device import loader_workers, processes_per_node, training_precision


def config_dir() -> Path:
    """``conf/`` of a source checkout, or the copy installed inside the package."""
    here = Path(__file__).resolve().parent
    source = here.parent / "conf"
    return source if (source / "config.yaml").is_file() else here / "conf"


def group_defaults(group: str, option: str) -> dict[str, Any]:
    """The values of one config group option (``conf/GROUP/OPTION.yaml``), resolved."""
    register_resolvers()
    path = config_dir() / group / f"{option}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {k: v for k, v in values.items() if k != "defaults"}


def is_style_config(entry: str) -> bool:
    """Whether a ``styles`` entry names a config of conf/style (else an image or URL)."""
    return (config_dir() / "style" / f"{entry}.yaml").is_file()


def style_name(entry: str) -> str:
    """The name a ``styles`` entry trains under: a conf/style config's name, or an image
    path's or URL's file stem."""
    if is_style_config(entry):
        return entry
    return Path(unquote(urlparse(entry).path)).stem or entry


def run_name(styles: list[str] | None, name: str) -> str:
    """The run directory's name: the style's, or the styles' joined by '+'."""
    return "+".join(style_name(str(entry)) for entry in styles) if styles else name


def trainer_devices(trainer: DictConfig | None) -> tuple[str, int | str | list[int]]:
    """A trainer config's accelerator and devices, as Lightning takes them (its defaults,
    "auto", where the config has none)."""
    trainer = trainer if trainer is not None else OmegaConf.create()
    devices = trainer.get("devices", "auto")
    if isinstance(devices, ListConfig):
        devices = list(devices)
    return trainer.get("accelerator", "auto"), devices


def precision_of_trainer(*, _parent_: DictConfig) -> str:
    """``precision: ${nst_fast.precision:}`` in a trainer config: the precision of the
    accelerator and devices beside it, so that ``trainer.devices=[1]`` trains in what
    GPU 1 computes in."""
    return training_precision(*trainer_devices(_parent_))


def workers_of_run(wanted: int, *, _root_: DictConfig) -> int:
    """``num_workers: ${nst_fast.workers:N}``: N loader workers per training process, fewer
    where the processes of ``trainer`` would take more than the node's cores."""
    return loader_workers(wanted, processes_per_node(*trainer_devices(_root_.get("trainer"))))


def register_resolvers() -> None:
    """Register the ``nst_fast.*`` resolvers that conf/'s values call (idempotent)."""
    if not OmegaConf.has_resolver("nst_fast.precision"):
        OmegaConf.register_new_resolver("nst_fast.precision", precision_of_trainer)
    if not OmegaConf.has_resolver("nst_fast.run_name"):
        OmegaConf.register_new_resolver("nst_fast.run_name", run_name)
    if not OmegaConf.has_resolver("nst_fast.workers"):
        OmegaConf.register_new_resolver("nst_fast.workers", workers_of_run)
    if not OmegaConf.has_resolver("nst_fast.sample_photos"):
        from nst_fast.data.samples import sample_photos_dir

        OmegaConf.register_new_resolver(
            "nst_fast.sample_photos", lambda part="": str(sample_photos_dir(part))
        )
