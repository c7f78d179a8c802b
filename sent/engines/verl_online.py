"""``curriculum.mode: online`` inside verl's trainer: the stage's dataset (``data.custom_cls``)
hands verl's dataloader the rows in the online order (`sent.online_stream`).

verl 0.9.1 has no curriculum-sampler hook any more (``data.sampler.class_path`` and
``AbstractCurriculumSampler.update`` are gone from its PPO trainers), but it still loads a dataset
class of ours and runs ``__getitem__`` in the trainer process when ``dataloader_num_workers`` is 0.
With ``data.shuffle=false`` its sampler asks for places 0, 1, 2, ... of each epoch; the dataset
counts them across epochs and answers each with the row the online order puts there, and the row
carries its place to our reward function, which records the rollout's answer
(`sent.online_record`). verl's dataloader keeps dropping the last partial batch of its epochs; the
stream itself runs on across them, as the local engine's does.

This holds for verl's synchronous trainers, which fetch a step's batch once the step before has
been rewarded: the V1 trainer (``trainer.use_v1``, the default, ``trainer.v1.trainer_mode:
sync``) and the legacy one. The asynchronous V1 modes fetch ahead and are not supported. A resumed
job takes its step from verl's checkpoint marker, since verl restores its dataloader's position
only within an epoch (the legacy trainer not at all at an epoch's end).

Imported by verl only (``pkg://sent.engines.verl_online``), in its trainer; the validation set uses
the same class and is served as verl's own dataset serves it.
"""

from __future__ import annotations

import logging
from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

from sent import online_record
from sent.online_stream import OnlineStream, StreamSettings, checkpointed_step

logger = logging.getLogger(__name__)
SETTINGS_KEY = "sent_online"
"""The key of `StreamSettings` (JSON) in verl's ``data`` config."""


class OnlineSEDataset(RLHFDataset):
    """verl's dataset, serving its training files in the online order; see the module docstring."""

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None, max_samples: int = -1):
        files = [str(f) for f in ([data_files] if isinstance(data_files, str) else data_files)]
        super().__init__(data_files, tokenizer, config, processor=processor, max_samples=max_samples)
        self.stream: OnlineStream | None = None
        if files != [str(f) for f in config.train_files]:
            return  # the validation set
        if config.get("shuffle", False) or config.get("dataloader_num_workers", 0) != 0:
            raise ValueError(
                "curriculum.mode 'online' needs verl's dataloader in the trainer process and in order: "
                "data.shuffle=false and data.dataloader_num_workers=0 (the online order shuffles by itself)"
            )
        settings = StreamSettings.from_json(config[SETTINGS_KEY])
        extra = list(self.dataframe["extra_info"])
        self.stream = OnlineStream(settings, [e["semantic_entropy"] for e in extra], [e["id"] for e in extra])
        self.stream.write_rows_file()
        fetch = config.get("gen_batch_size") or settings.batch_size  # verl's dataloader batch
        self.usable = len(self) // fetch * fetch  # the places of one verl epoch (a partial batch is dropped)
        self.position: int | None = None  # the next place: decided at the first, after verl's resume

    def __getitem__(self, item: int) -> dict:
        if self.stream is None:
            return super().__getitem__(item)
        if self.position is None:  # verl has loaded its checkpoint by now: start where it did
            step = checkpointed_step(self.stream.settings.checkpoints)
            self.stream.resume(step)
            self.position = step * self.stream.settings.batch_size
        if item != self.position % self.usable:
            raise RuntimeError(
                f"verl asked for place {item} of its epoch, and the online stream is at place "
                f"{self.position % self.usable} of {self.usable}: its dataloader must ask in order "
                "(data.shuffle=false, dataloader_num_workers=0)"
            )
        row, epoch = self.stream.row_at(self.position)
        out = super().__getitem__(row)
        place = online_record.place(self.position, row, epoch, self.stream.settings.record)
        out["extra_info"] = {**out["extra_info"], online_record.KEY: place}
        self.position += 1
        return out

    def on_batch_end(self, batch: Any) -> None:
        """After each step but the last (the legacy trainer's hook): take the step's rollouts in
        now, so that the history on disk follows the training. Without the hook (V1) they are taken
        in at the next step's first place; the last step's, by the engine after the job."""
        del batch  # the record has the answers; verl's batch holds them only as tokens
        if self.stream is not None:
            self.stream.take_in()
