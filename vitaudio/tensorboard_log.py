"""`--log tensorboard`: each epoch of a model's training (train and val loss and accuracy, the learning rate, the
val confusion matrix) as TensorBoard event files in the model's own run directory, so that `tensorboard --logdir
RUN_DIR` shows every model a run trains (an ensemble's members, a CNN teacher) as a run of its own.

tensorboard is an optional extra: it is imported only when asked for, through `summary_writer_class`."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .plots import figure_rgb, plot_confusion_matrix
from .report import confusion_matrix

INSTALL_COMMAND = 'pip install "vitaudio[tensorboard]" (in a clone of vitaudio: pip install -e ".[tensorboard]")'
SCALAR_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
               "val_acc": "accuracy/val", "lr": "learning_rate"}  # metrics.jsonl field -> TensorBoard tag
CONFUSION_TAG = "confusion_matrix/val"


def summary_writer_class() -> type:
    """torch's SummaryWriter; ConfigError with the install command when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ConfigError(f"--log tensorboard: tensorboard is not installed ({err}); install it with "
                          f"{INSTALL_COMMAND}") from err
    return SummaryWriter


class TensorBoardLog:
    """Writes `engine.fit`'s epoch records into event files in `run_dir`, the epoch number as the step: a resumed
    run goes on from its next epoch. Use it as a context manager, so that the file is closed also on errors."""

    def __init__(self, run_dir: Path, classes: list[str]):
        self.run_dir, self.classes = Path(run_dir), classes
        self._writer = None  # made at the first epoch: a run that trains none (a finished member) gets no file

    def log_epoch(self, record: dict) -> None:
        """`fit`'s on_epoch: the record's numbers, and the confusion matrix of its val clip logits and labels."""
        if self._writer is None:
            self._writer = summary_writer_class()(log_dir=str(self.run_dir))
        epoch = record["epoch"]
        for field, tag in SCALAR_TAGS.items():
            self._writer.add_scalar(tag, record[field], epoch)
        predictions = record["val_clip_logits"].argmax(dim=1)
        matrix = confusion_matrix(record["val_labels"], predictions, len(self.classes))
        self._writer.add_image(CONFUSION_TAG, figure_rgb(plot_confusion_matrix(matrix.tolist(), self.classes)), epoch,
                               dataformats="HWC")
        self._writer.flush()  # each epoch shows as it ends, and survives a killed run

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
