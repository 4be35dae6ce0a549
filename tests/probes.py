"""A Lightning callback the tests attach through `+callbacks.NAME._target_=...`."""

import hashlib
import json
from pathlib import Path

import pytorch_lightning as pl


class RecordRank(pl.Callback):
    """Write, per rank, the photos it trained on and a hash of its final weights."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.seen: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += batch["path"]

    def on_train_end(self, trainer, pl_module) -> None:
        digest = hashlib.sha256()
        for value in pl_module.transformer.state_dict().values():
            digest.update(value.detach().cpu().numpy().tobytes())
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"seen": self.seen, "weights": digest.hexdigest(), "world": trainer.world_size}
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
