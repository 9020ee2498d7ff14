"""`--log tensorboard`: each epoch of a model's training (train and val loss and accuracy, the learning rate, the
val confusion matrix; a tagger's val mAP and per-class average precision instead of the matrix) as TensorBoard
event files in the model's own run directory, so that `tensorboard --logdir
RUN_DIR` shows every model a run trains (an ensemble's members, a CNN teacher) as a run of its own.

tensorboard is an optional extra: it is imported only when asked for, through `summary_writer_class`."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .plots import figure_rgb, plot_confusion_matrix, plot_per_class_ap
from .report import confusion_matrix
from .tagging import tagging_report

INSTALL_COMMAND = 'pip install "vitaudio[tensorboard]" (in a clone of vitaudio: pip install -e ".[tensorboard]")'
SCALAR_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
               "val_acc": "accuracy/val", "lr": "learning_rate"}  # metrics.jsonl field -> TensorBoard tag
CONFUSION_TAG = "confusion_matrix/val"
MAP_TAG, PER_CLASS_AP_TAG = "map/val", "per_class_ap/val"  # a tagger's, in place of the confusion matrix


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
        logits, labels = record["val_clip_logits"], record["val_labels"]
        if labels.dim() == 2:  # multi-hot: a tagger
            self._writer.add_scalar(MAP_TAG, record["val_map"], epoch)
            report = tagging_report(logits.sigmoid(), labels, self.classes, [0.5] * len(self.classes))
            figure, tag = plot_per_class_ap(report), PER_CLASS_AP_TAG
        else:
            matrix = confusion_matrix(labels, logits.argmax(dim=1), len(self.classes))
            figure, tag = plot_confusion_matrix(matrix.tolist(), self.classes), CONFUSION_TAG
        self._writer.add_image(tag, figure_rgb(figure), epoch, dataformats="HWC")
        self._writer.flush()  # each epoch shows as it ends, and survives a killed run

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
