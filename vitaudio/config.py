"""A training run's configuration, `TrainConfig`, and the command line that fills it (`python train.py --help`)."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from .cli_help import DefaultsHelpFormatter
from .errors import ConfigError
from .model import PRESETS
from .rundir import has_resume_state, read_saved_config
from .scoring import cpu_has_bf16
from .tensorboard_log import summary_writer_class

TEACHERS = ("members", "cnn")  # what --distill learns from
LOGS = ("none", "tensorboard")  # where each epoch's numbers also go, besides metrics.jsonl
BALANCES = ("auto", "sampler", "weights", "none")  # how training makes up for classes of unequal size
SCHEDULES = ("plateau", "cosine")  # the lr after the warm-up


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json and inside every checkpoint."""

    root: str | None = None  # audio class folders, a manifest or melify output; None = the demo set in data/demo
    model: str = "mini"  # ViT preset (model.PRESETS); mini meets the CPU inference targets and beat tiny on real music
    epochs: int = 150  # total epochs (also when resuming); early stopping may end sooner
    batch_size: int = 32  # per process
    lr: float = 1e-3  # AdamW peak learning rate, reached after the warm-up
    weight_decay: float = 0.05
    warmup_epochs: int = 3  # linear warm-up from lr / 100; the schedule takes over after it
    schedule: str = "plateau"  # "plateau": ReduceLROnPlateau on val clip loss; "cosine": a cosine decay to lr / 100
    # at the last epoch, with no early stopping
    plateau_patience: int = 8  # epochs without a lower val clip loss before the lr is cut
    plateau_factor: float = 0.3  # the cut
    patience: int = 20  # early stopping: epochs without a lower val clip loss
    segment_seconds: float | None = None  # training crop and evaluation segment; None: 3 s, or the median clip if less
    time_stride: int | None = None  # frames between the starts of neighbouring patches; None: the patch's width, or
    # half of it for segments shorter than 8 patches (run.patch_time_stride)
    freq_stride: int | None = None  # mel bins between the starts of neighbouring patches; None: the patch's height
    label_smoothing: float = 0.1
    mixup: float = 0.3  # Beta(alpha, alpha) mixup of training batches; 0 = off
    band_shift: float = 0.0  # shift training crops up or down the mel axis by up to this share of the bands (pitch)
    time_stretch: float = 0.0  # stretch training crops in time by a factor in [1 / (1 + x), 1 + x] (tempo)
    gain_db: float = 0.0  # raise or lower each training clip's level by up to this many dB
    band_crop: float = 0.0  # narrow training crops' mel range by up to this share of the bands at each end (fmin/fmax)
    cutmix: bool = False  # mix batches by pasting a time span or mel band of the partner instead of blending
    patchout: float = 0.0  # drop this share of the patch grid's time columns and mel rows in training (PaSST)
    ema_epochs: float = 0.0  # score and keep a moving average of the weights over ~this many epochs; 0 = off
    distill: float = 0.0  # weight of the teacher's soft predictions in the members' loss; 0 = no teacher
    teacher: str = "members"  # with distill: "members" = each member learns from the ones before it, "cnn" = all
    # members learn from a small CNN (model.ConvNet) trained first, in the run's teacher/ folder
    unlabelled: str | None = None  # audio without labels (any layout) that members with a teacher also learn from
    rotate_val: bool = False  # members after the first validate on other train + val clips: the ensemble sees all
    grad_clip: float = 1.0  # max gradient norm
    device: str = "auto"  # auto | cpu | cuda
    amp: bool | None = None  # mixed precision (bf16 autocast); None = on for CUDA and CPUs with bf16 in hardware
    workers: int | None = None  # data-loading processes; None = 0 on CPU, up to 8 on CUDA
    out: str | None = None  # the run directory; None = runs/<timestamp>
    seed: int = 0  # model init, crops, masks, batch order
    split_seed: int = 0  # the train/val/test split, kept apart from `seed` so runs can share a split
    split_file: str | None = None  # JSON {"train": [...], ...} or CSV clip,split
    groups: str | None = None  # CSV clip,group; None = ROOT/metadata.csv when it has those columns
    init_from: str | None = None  # checkpoint to fine-tune from (head re-initialised when classes differ)
    members: int = 2  # models trained one after another, seeds seed, seed + 1, ...; they predict by their mean logits
    log: str = "none"  # "tensorboard": each model's epochs also as TensorBoard event files in its run directory
    multi_label: bool = False  # tag: sigmoid scores and per-class thresholds, also when each clip has one label
    # (a data set where some clip has two labels or more is multi-label anyway)
    balance: str = "auto"  # unequal classes: "sampler" draws every class alike, "weights" weights the loss by
    # inverse class size; "auto" = run.AUTO_BALANCE (weights) when the largest training class has more than twice
    # the clips of the smallest

    def check(self) -> None:
        """Raise ConfigError naming the first out-of-range option (before anything is written)."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "members": self.members,
                    "segment_seconds": 1 if self.segment_seconds is None else self.segment_seconds,
                    "patience": self.patience}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be greater than 0")
        for name in ("mixup", "weight_decay", "label_smoothing", "warmup_epochs", "band_shift", "time_stretch",
                     "ema_epochs", "distill", "gain_db", "band_crop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must not be negative")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers {self.workers}: must not be negative")
        for name in ("time_stride", "freq_stride"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: the step between patches, at least 1")
        if self.band_crop >= 0.5:
            raise ConfigError(f"--band-crop {self.band_crop}: a share of the bands cut at each end, below 0.5")
        if not 0 <= self.patchout < 1:
            raise ConfigError(f"--patchout {self.patchout}: a share in [0, 1)")
        if self.distill > 1:
            raise ConfigError(f"--distill {self.distill}: a weight in [0, 1]")
        if self.teacher not in TEACHERS:
            raise ConfigError(f"--teacher {self.teacher}: choose from {', '.join(TEACHERS)}")
        if self.unlabelled and not self.distill:
            raise ConfigError(f"--unlabelled {self.unlabelled}: unlabelled clips are learnt from a teacher's "
                              f"predictions; add --distill W (e.g. 0.5)")
        if self.model not in PRESETS:
            raise ConfigError(f"--model {self.model}: not a preset (choose from {', '.join(sorted(PRESETS))})")
        if self.log not in LOGS:
            raise ConfigError(f"--log {self.log}: choose from {', '.join(LOGS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {self.schedule}: choose from {', '.join(SCHEDULES)}")
        if self.balance not in BALANCES:
            raise ConfigError(f"--balance {self.balance}: choose from {', '.join(BALANCES)}")
        if self.log == "tensorboard":
            summary_writer_class()  # an optional extra: refused here when missing, before anything is written

    @property
    def cnn_teacher(self) -> bool:
        """Whether the run trains a CNN first for its members to learn from."""
        return self.distill > 0 and self.teacher == "cnn"

    @property
    def models_trained(self) -> int:
        """Models the run trains one after another: its members, and a CNN teacher first where there is one."""
        return self.members + self.cnn_teacher

    def loader_workers(self, device: torch.device) -> int:
        """--workers as given; by default none on the CPU (reading the store costs little next to a step), up to 8
        for CUDA, so that reading and copying overlap the GPU's work."""
        if self.workers is not None:
            return self.workers
        return min(8, os.cpu_count() or 1) if device.type == "cuda" else 0

    @property
    def eval_batch_size(self) -> int:
        """Clips per validation and test batch: each clip is many segments, so a quarter of the training batch."""
        return max(1, self.batch_size // 4)

    def amp_on(self, device: torch.device) -> bool:
        """--amp as given; by default on for CUDA, and on CPUs that multiply bf16 in hardware."""
        if self.amp is not None:
            return self.amp
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())


def config_of_run(run_dir: Path, epochs: int | None = None) -> TrainConfig:
    """The config a run in `run_dir` was started with, `epochs` the new total when given."""
    saved = read_saved_config(run_dir)["train"]
    if epochs and epochs != saved["epochs"] and saved.get("schedule") == "cosine":
        raise ConfigError(f"{run_dir}: its cosine schedule decays over its {saved['epochs']} epochs; a new --epochs "
                          f"would change its learning rate mid-run. Resume without --epochs, or start a new run "
                          f"(--init-from {run_dir}/best.pt)")
    # runs from before --members had one model, runs from before --balance compensated nothing
    return TrainConfig(**{"members": 1, "balance": "none", **saved, "epochs": epochs or saved["epochs"]})


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, Path | None]:
    """Flags -> (config, run directory to resume or None). A resumed run keeps its config but --epochs."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python train.py", formatter_class=DefaultsHelpFormatter,
                                     description="Train a spectrogram ViT on audio class folders (or melify "
                                                 "output) and test it once on held-out clips.")
    parser.add_argument("--root", help="audio class folders, a CSV/JSON Lines manifest of audio "
                                       "(path,label[,group][,split]) or melify output (default: the demo set in "
                                       "data/demo)")
    parser.add_argument("--model", choices=sorted(PRESETS), default=defaults.model, help="ViT preset")
    parser.add_argument("--epochs", type=int, help=f"total epochs (default: {defaults.epochs}; a resumed run's own)")
    helps = {"batch_size": "clips per training batch (per process)", "lr": "AdamW peak learning rate",
             "segment_seconds": "training crop and evaluation segment length (default: 3 s, or the median clip "
                                "length where clips are shorter); refused when a training step would not fit in "
                                "the free memory", "mixup": "mixup alpha (0 = off)",
             "patience": "early stopping: epochs without a lower val loss", "seed": "training seed (member k: +k)",
             "split_seed": "seed of the grouped 80/10/10 split", "members": "models trained and averaged",
             "distill": "weight of the teacher's soft predictions in the members' loss (0 = no teacher)"}
    for name, help_text in helps.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=float if name == "segment_seconds" else
                            type(getattr(defaults, name)),
                            default=getattr(defaults, name), help=help_text)
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="the lr after the warm-up: plateau = cut by 0.3 after 8 epochs without a lower val "
                             "loss, with early stopping (--patience); cosine = decay to lr / 100 at the last epoch, "
                             "every epoch trained")
    parser.add_argument("--teacher", choices=TEACHERS, default=defaults.teacher,
                        help="with --distill: members = each member learns from the ones before it; cnn = a small "
                             "CNN is trained first and every member learns from it")
    parser.add_argument("--unlabelled", help="folder of unlabelled audio of the same kind (any layout): members "
                                             "with a teacher (--distill) learn its predictions on these clips too; "
                                             "clips identical to validation or test clips are refused")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device, help="auto: CUDA if any")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="mixed precision for training and per-epoch validation: bf16 autocast (fp16 on CUDA "
                             "GPUs without bf16); the test report and inference run in fp32. Default: on for CUDA "
                             "and for CPUs with bf16 arithmetic in hardware (AVX512-BF16 or AMX); other CPUs emulate "
                             "bf16, slower than fp32")
    parser.add_argument("--workers", type=int, help="data-loading (and melify) processes (default: 0 on CPU, up to "
                                                    "8 on CUDA; melify: all cores)")
    parser.add_argument("--out", help="run directory, new or empty (default: runs/<timestamp>)")
    parser.add_argument("--split-file", help='JSON {"train": [...], "val": [...], "test": [...]} or CSV clip,split '
                                             "(default: a split made from --split-seed)")
    parser.add_argument("--groups", help="CSV clip,group for grouped splits (default: ROOT/metadata.csv)")
    parser.add_argument("--init-from", help="checkpoint to fine-tune from (default: random weights)")
    parser.add_argument("--log", choices=LOGS, default=defaults.log,
                        help="tensorboard: also write each epoch's losses, accuracies, learning rate and val "
                             "confusion matrix as TensorBoard event files in each model's run directory (view "
                             "with: tensorboard --logdir RUN_DIR)")
    parser.add_argument("--balance", default=defaults.balance,
                        help="classes of unequal size in the training split: sampler = draw clips with "
                             "probability inversely proportional to their class's size; weights = weight the loss "
                             "by inverse class size; auto = weights when the largest class has more than twice "
                             "the clips of the smallest (unlabelled clips are not counted); none = as they come. "
                             f"Choose from {', '.join(BALANCES)}")
    parser.add_argument("--multi-label", action="store_true",
                        help="train a multi-label tagger (a sigmoid score and a threshold per class) even though "
                             "each clip has one label (default: only when some clip of a manifest has two or more)")
    parser.add_argument("--resume", type=Path, help="continue the interrupted run in this directory")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    if resume:
        if not has_resume_state(resume):
            parser.error(f"{resume} has no last.pt to resume from")
        return config_of_run(resume, args["epochs"]), resume
    args["epochs"] = args["epochs"] if args["epochs"] is not None else defaults.epochs
    return TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig) if f.name in args}), None
