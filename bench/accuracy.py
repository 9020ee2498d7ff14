"""Clip-level test accuracy of vitaudio's default recipe against reference recipes, on one leak-free split.

    python bench/accuracy.py --root data/styles_dev --write-results               # all contenders, seeds 0 1 2
    python bench/accuracy.py --root data/styles_dev --contenders classical        # the fast baseline alone
    python bench/accuracy.py --root data/styles_dev --folds 5 --seeds 0           # every clip tested once
    python bench/accuracy.py --root data/styles_tiny --folds 4 --seeds 0 --budget-minutes 1   # smoke test

ROOT holds audio class folders and `metadata.csv` (clip, group = source work). One split grouped by work is made
from `--split-seed` (or `--folds K` grouped, stratified folds: test = fold k, val = fold k+1, train = the rest) and
written once to OUT/split*.json; every contender and seed reads that file. Contenders:
  vitaudio   `python train.py --root ROOT --split-file F --seed S`, untouched (so 2 members, seeds S and S + 1),
             its epochs capped by the budget, which covers all members
  classical  mean/std over time of 20 MFCCs and 128 log-mels + standardised logistic regression, C chosen on val
  cnn        vitaudio.model.ConvNet (the `--teacher cnn` teacher): 4 conv3x3-BN-ReLU-maxpool blocks (32-256
             channels), trained and scored exactly as our ViT is
  blog       CPU stand-in for the GTZAN ViT blog: matplotlib mel images 224x224 (not 480), ViT-Tiny width (not
             Base), Adam 1e-3, ReduceLROnPlateau on val accuracy; one image per clip
  blog480    the blog's own recipe: the same at 480x480 with ViT-Base width, fp32; a GPU's work (6 s an epoch of 472
             clips on an H100), so by default it runs on a GPU and `blog` on a CPU
Each (contender, fold, seed) run trains for at most `--budget-minutes` on the budget clock (an epoch is not
started when it would end past the budget); the best-validation weights are tested once. The budget clock is this
process's CPU time divided by torch's threads: wall time on an idle machine whose cores are all busy with the run,
and not eaten by other people's jobs on a shared one, so contenders run at different times get the same compute.
Runs go split by split and seed by seed, every contender in turn, so a benchmark stopped part-way has compared
the contenders on the same folds. Rows accumulate in OUT/results.jsonl, and a re-run skips the runs it holds
(`--redo` runs them again, replacing their rows), so an interrupted benchmark is continued by running it again,
and contenders may be run in separate invocations; the table covers every row there. Every row records the data's
fingerprint (a hash of every audio file's bytes): rebuilds of a rendered data set differ, so OUT refuses rows of
another build.
`--imbalance F` makes the classes unequal: in every split, the classes at odd indices of the sorted class list keep
a share F of their training clips (whole groups of the class's clips, drawn with the split seed), val and test as
they were; the split files hold the reduced splits, so every contender trains on the same clips.
A class whose works are few and long can miss the 80/10/10 test split (styles_dev's classical_chamber: 6 works x
10 clips); the report names such classes, and --folds avoids them.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vitaudio.audio import load_audio  # noqa: E402
from vitaudio.config import TrainConfig  # noqa: E402
from vitaudio.data import (  # noqa: E402
    MelClips,
    SegmentRule,
    TrainAugment,
    mel_stats,
    read_mel_config,
    segment_loader,
    source_paths,
    train_batches,
)
from vitaudio.engine import HIGHEST_VAL_ACCURACY, LoopConfig, Schedule, evaluate, fit  # noqa: E402
from vitaudio.files import atomic_path, data_fingerprint, write_text_atomic  # noqa: E402
from vitaudio.melify import cached_melify  # noqa: E402
from vitaudio.model import ConvNet  # noqa: E402
from vitaudio.report import classification_report  # noqa: E402
from vitaudio.run import loop_config, make_optimizer, segment_frames  # noqa: E402
from vitaudio.rundir import member_dirs, seed_everything  # noqa: E402
from vitaudio.scoring import resolve_device  # noqa: E402
from vitaudio.splits import SPLITS, clip_key, make_split, read_groups, read_split_file, write_split_file  # noqa: E402
from vitaudio.train import train  # noqa: E402

CONTENDERS = ("vitaudio", "classical", "cnn", "blog", "blog480")
RESULTS_MD = Path(__file__).with_name("RESULTS.md")


@dataclass
class RunResult:
    """One (contender, split, seed) run, scored on the test clips."""

    contender: str
    split: str  # "split" or "fold<k>"
    seed: int
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]  # the classes the test split holds
    confusion_matrix: list[list[int]]  # rows = true class, columns = predicted
    seconds: float  # wall time of training and testing; cached preparation (mels, images, features) excluded
    epochs: int | None  # epochs trained (None for the classical model)
    command: str = ""
    budget_seconds: float = 0.0  # the same on the budget clock
    data: str = ""  # data_fingerprint of the root ("" in rows from before it was recorded)
    predicted: dict[str, str] = field(default_factory=dict)  # test clip key -> predicted class (empty in old rows)
    balanced_accuracy: float | None = None  # mean recall over the classes tested (None in old rows)


@dataclass
class Bench:
    """The data every contender shares, and caches filled on first use."""

    root: Path
    mel_root: Path
    classes: list[str]
    out: Path
    budget_s: float  # training budget per run, on the budget clock
    device: torch.device
    prep_seconds: dict[str, float] = field(default_factory=dict)
    data: str = ""  # data_fingerprint(root)
    features: dict[str, np.ndarray] | None = None  # classical: clip key -> feature vector
    images: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # blog: size -> key -> (3, size, size)
    imbalance: float | None = None  # share of their training clips the reduced classes keep; None = all classes whole

    @property
    def reduced_classes(self) -> list[str]:
        """The classes --imbalance cuts: every other one of the sorted list, from the second."""
        return self.classes[1::2] if self.imbalance is not None else []


@dataclass
class Task:
    name: str
    split: dict[str, list[str]]  # clip keys per split
    split_file: Path


def budget_clock() -> float:
    """Seconds of CPU time this process has used, per torch thread (see the module docstring)."""
    return time.process_time() / torch.get_num_threads()


def label_of(bench: Bench, key: str) -> int:
    return bench.classes.index(key.split("/")[0])  # clip keys are "<class>/<stem>"


def result_of(contender: str, task: Task, seed: int, report: dict, start: tuple[float, float],
              epochs: int | None, predicted: dict[str, str]) -> RunResult:
    """A run's result from its test report, its (wall, budget clock) start times and its test predictions."""
    return RunResult(contender, task.name, seed, report["accuracy"], report["macro_f1"],
                     {name: scores["f1"] for name, scores in report["per_class"].items() if scores["support"]},
                     report["confusion_matrix"], time.time() - start[0], epochs,
                     budget_seconds=budget_clock() - start[1], predicted=predicted,
                     balanced_accuracy=report["balanced_accuracy"])


def predictions(bench: Bench, keys: list[str], clip_logits: torch.Tensor) -> dict[str, str]:
    """Clip keys and their clip logits (n_clips, n_classes), in the same order -> clip key -> predicted class."""
    return {key: bench.classes[i] for key, i in zip(keys, clip_logits.argmax(dim=1).tolist())}


def make_tasks(bench: Bench, split_seed: int, folds: int, split_file: Path | None) -> list[Task]:
    """The one grouped split (or K grouped folds), written to OUT once and read back from there."""
    if split_file:
        return [Task("split", read_split_file(split_file), split_file)]
    clips = MelClips(bench.mel_root)
    groups = read_groups(bench.root / "metadata.csv") if (bench.root / "metadata.csv").exists() else None
    if groups is None:
        print(f"warning: {bench.root}/metadata.csv has no clip,group columns: splitting by clip", file=sys.stderr)
    if folds:
        from sklearn.model_selection import StratifiedGroupKFold

        folder = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=split_seed)
        group_of_clip = [groups[key] if groups else key for key in clips.keys]
        fold_of = np.zeros(len(clips), dtype=int)
        for k, (_, test_index) in enumerate(folder.split(clips.keys, clips.targets, group_of_clip)):
            fold_of[test_index] = k
        splits = {f"fold{k}": {name: sorted(key for key, f in zip(clips.keys, fold_of) if f == (k + i) % folds)
                               for name, i in (("test", 0), ("val", 1))} for k in range(folds)}
        for split in splits.values():
            split["train"] = sorted(set(clips.keys) - set(split["test"]) - set(split["val"]))
    else:
        splits = {"split": make_split(clips.keys, clips.targets, groups, seed=split_seed)}
    if bench.imbalance is not None:
        splits = {name: imbalanced(split, bench.reduced_classes, groups, bench.imbalance, split_seed)
                  for name, split in splits.items()}
        print(f"imbalance: {', '.join(bench.reduced_classes)} keep {bench.imbalance:.0%} of their training clips")
    tasks = []
    for name, split in splits.items():
        path = bench.out / f"{name}.json"
        if not path.exists():  # written once: later invocations and every contender read this file
            write_split_file(path, split, source_paths(bench.mel_root))
        task = Task(name, read_split_file(path), path)
        if bench.imbalance is not None and task.split != {k: sorted(v) for k, v in split.items()}:
            raise SystemExit(f"{path}: not the split --imbalance {bench.imbalance:g} makes (an earlier run's, "
                             f"with other options?): pass another --out")
        if not task.split["test"] or not task.split["val"]:
            raise SystemExit(f"{path}: the val or test split is empty; the data set is too small for this split "
                             f"(try --folds 4, or fewer folds)")
        tasks.append(task)
    return tasks


def imbalanced(split: dict[str, list[str]], reduced: list[str], groups: dict[str, str] | None, keep: float,
               seed: int) -> dict[str, list[str]]:
    """`split` with the training clips of each class in `reduced` cut to about a share `keep` (at least one group):
    whole groups of the class's clips where `groups` are known, else clips, drawn with `seed`. Val and test are
    returned as they were."""
    rng = np.random.default_rng(seed)
    train = []
    for name in sorted({key.split("/")[0] for key in split["train"]}):
        keys = sorted(key for key in split["train"] if key.split("/")[0] == name)
        if name not in reduced:
            train += keys
            continue
        clips_of_group: dict[str, list[str]] = {}
        for key in keys:
            clips_of_group.setdefault(groups.get(key, key) if groups else key, []).append(key)
        wanted, kept = max(1, round(keep * len(keys))), []
        for group in rng.permutation(sorted(clips_of_group)):
            if len(kept) >= wanted:
                break
            kept += clips_of_group[group]
        train += kept
    return {**split, "train": sorted(train)}


class MemberBudget:
    """`engine.fit`'s stop hook for a run of `members` models trained one after another within `budget_s` on the
    budget clock: each member may use an equal share of what the members before it left, and an epoch is not
    started when, at the cost of the one before, it would end past that share."""

    def __init__(self, budget_s: float, members: int):
        self.start, self.budget_s, self.members_left = budget_clock(), budget_s, members
        self.member_start = self.member_share = self.last_call = 0.0
        self.last_epoch = 0

    def __call__(self, epoch: int) -> bool:
        now = budget_clock()
        if epoch <= self.last_epoch or self.last_epoch == 0:  # a member begins
            self.member_start, self.members_left = now, self.members_left - (self.last_epoch > 0)
            self.member_share = (self.budget_s - (now - self.start)) / max(self.members_left, 1)
            epoch_cost = 0.0
        else:
            epoch_cost = now - self.last_call
        self.last_call, self.last_epoch = now, epoch
        return now - self.member_start + epoch_cost > self.member_share


def member_epochs(run_dir: Path, config: TrainConfig) -> list[int]:
    """Epochs each member of the run in `run_dir` has trained."""
    return [len((d / "metrics.jsonl").read_text().splitlines())
            for d in member_dirs(run_dir, config.members, teacher=config.cnn_teacher)]


def run_vitaudio(bench: Bench, task: Task, seed: int, recipe: dict | None = None) -> RunResult:
    """train.py's default recipe, untouched unless `recipe` changes some of its fields (a variant under test),
    with the budget split between its members (MemberBudget)."""
    name = recipe_name(recipe)
    run_dir = bench.out / name.replace(" ", "_") / f"{task.name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = TrainConfig(root=str(bench.root), split_file=str(task.split_file), seed=seed, out=str(run_dir),
                         **(recipe or {}))
    start = (time.time(), budget_clock())
    train(config, stop=MemberBudget(bench.budget_s, config.models_trained))
    report = json.loads((run_dir / "test_report.json").read_text())
    with open(run_dir / "test_predictions.csv", newline="") as file:
        predicted = {clip_key(row["clip"]): row["predicted"] for row in csv.DictReader(file)}
    return result_of(name, task, seed, report, start, max(member_epochs(run_dir, config)), predicted)


def recipe_name(recipe: dict | None) -> str:
    """"vitaudio", or for a variant of the default "vitaudio a=1 b=2" (its changes, sorted)."""
    return " ".join(["vitaudio", *(f"{k}={v}" for k, v in sorted((recipe or {}).items()))])


def parse_recipe(pairs: list[str]) -> dict:
    """["ema_epochs=5", "members=3"] -> TrainConfig field values, of the types the fields declare."""
    kinds = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}
    declared = {f.name: kinds[str(f.type).split(" |")[0]] for f in fields(TrainConfig)}
    recipe = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in declared or not value:
            raise SystemExit(f"--recipe {pair}: expected FIELD=VALUE with a field of TrainConfig")
        recipe[name] = declared[name](value)
    return recipe


def classical_features(bench: Bench, keys: list[str]) -> dict[str, np.ndarray]:
    """Clip key -> mean and std over time of 20 MFCCs and 128 log-mels (296 values), computed once."""
    import librosa

    start, audio_of, features = time.time(), source_paths(bench.mel_root), {}
    for key in keys:
        samples = load_audio(bench.root / audio_of[key], 22050)
        log_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=samples, sr=22050, n_mels=128))  # (128, T)
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=20)  # (20, T)
        features[key] = np.concatenate([mfcc.mean(1), mfcc.std(1), log_mel.mean(1), log_mel.std(1)])
    bench.prep_seconds["classical features"] = time.time() - start
    return features


def run_classical(bench: Bench, task: Task, seed: int) -> RunResult:
    """Logistic regression on standardised clip features, fitted on train, C picked by val accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if bench.features is None:
        bench.features = classical_features(bench, sorted(k for keys in task.split.values() for k in keys))
    start = (time.time(), budget_clock())
    x, y = ({name: np.stack([bench.features[k] for k in task.split[name]]) for name in SPLITS},
            {name: np.array([label_of(bench, k) for k in task.split[name]]) for name in SPLITS})
    fits = [make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed))
            .fit(x["train"], y["train"]) for c in (0.01, 0.1, 1.0, 10.0)]
    best = max(fits, key=lambda model: model.score(x["val"], y["val"]))  # first (smallest C) of equals
    print(f"  C = {best[-1].C:g} (val accuracy {best.score(x['val'], y['val']):.3f})")
    clip_logits = torch.full((len(y["test"]), len(bench.classes)), -1e9, dtype=torch.float64)  # (n_test, n_classes)
    clip_logits[:, best.classes_] = torch.from_numpy(best.predict_log_proba(x["test"]).astype(np.float64))
    report = classification_report(clip_logits, torch.from_numpy(y["test"]), bench.classes)
    return result_of("classical", task, seed, report, start, None,
                     predictions(bench, task.split["test"], clip_logits))


class WithoutContext(nn.Module):
    """An image model called as vitaudio's loops call a ViT, (input, context) -> logits; the context is ignored."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(images)


def run_cnn(bench: Bench, task: Task, seed: int) -> RunResult:
    """The CNN on our exact pipeline: train.py's augmentation, standardisation, optimiser, schedule, mixup, loop."""
    recipe, start = TrainConfig(), (time.time(), budget_clock())
    seed_everything(seed)
    train_clips = MelClips(bench.mel_root, task.split["train"])
    frames = segment_frames(None, read_mel_config(bench.mel_root), train_clips)
    rule, standardize = SegmentRule(frames, frames), mel_stats(train_clips)
    train_set = MelClips(bench.mel_root, task.split["train"], stored=True, images=True)
    loaders = {"train": train_batches(train_set, TrainAugment(frames, standardize), bench.device,
                                      batch_size=recipe.batch_size, shuffle=True,
                                      drop_last=len(train_set) > recipe.batch_size)}
    for name in ("val", "test"):
        clips = MelClips(bench.mel_root, task.split[name], stored=True)
        loaders[name] = segment_loader(clips, rule, standardize, batch_size=recipe.eval_batch_size)
    model = ConvNet(n_classes=len(bench.classes)).to(bench.device)
    optimizer, schedule = make_optimizer(model, recipe, steps_per_epoch=len(loaders["train"]))
    loop = loop_config(recipe, recipe.amp_on(bench.device))  # the package's precision, as the ViT arm trains
    return fit_and_test("cnn", bench, task, seed, model, loaders, optimizer, schedule, loop, start)


def fit_and_test(contender: str, bench: Bench, task: Task, seed: int, model: nn.Module,
                 loaders: dict, optimizer: torch.optim.Optimizer, schedule: Schedule,
                 loop: LoopConfig, start: tuple[float, float]) -> RunResult:
    """Train through the package's loop within the budget, then test the best-validation weights once."""
    result = fit(model, loaders["train"], loaders["val"], optimizer, schedule, loop, device=bench.device,
                 stop=MemberBudget(bench.budget_s, 1))
    test = evaluate(model, loaders["test"], device=bench.device)
    keys = getattr(loaders["test"].dataset, "clips", None)
    keys = keys.keys if keys is not None else task.split["test"]  # MelClips' own order, or a list in split order
    return result_of(contender, task, seed, classification_report(test.clip_logits, test.labels, bench.classes),
                     start, result.last_epoch, predictions(bench, keys, test.clip_logits))


def render_blog_png(audio_path: Path, png: Path) -> None:
    """The blog's picture of a whole clip: specshow of power_to_db(mel, ref=max), axes off, saved atomically."""
    import librosa
    import librosa.display
    from matplotlib.figure import Figure

    samples = load_audio(audio_path, 22050)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=samples, sr=22050), ref=np.max)
    fig = Figure()
    ax = fig.add_subplot()
    librosa.display.specshow(mel_db, sr=22050, ax=ax)
    ax.axis("off")
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp_path:
        fig.savefig(tmp_path, format="png", bbox_inches="tight", pad_inches=0)


def blog_images(bench: Bench, keys: list[str], size: int = 224) -> dict[str, torch.Tensor]:
    """Clip key -> (3, size, size) uint8: the blog's rendering, cached as PNGs in ROOT.blog-png/ next to ROOT
    (rendered by one process per core), resized on loading."""
    from concurrent.futures import ProcessPoolExecutor

    from PIL import Image

    start, audio_of = time.time(), source_paths(bench.mel_root)
    cache = bench.root.parent / f"{bench.root.name}.blog-png"
    missing = [key for key in keys if not (cache / f"{key}.png").exists()]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(render_blog_png, [bench.root / audio_of[k] for k in missing],
                      [cache / f"{k}.png" for k in missing], chunksize=8))
    images = {}
    for key in keys:
        rgb = Image.open(cache / f"{key}.png").convert("RGB").resize((size, size), Image.BILINEAR)
        images[key] = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    bench.prep_seconds[f"blog images {size} px"] = time.time() - start
    return images


def run_blog(bench: Bench, task: Task, seed: int, *, full_size: bool = False, epochs: int = 30) -> RunResult:
    """The blog's recipe, scaled to CPU (224x224 images, ViT-Tiny width) unless `full_size` (480x480, ViT-Base
    width: the blog's own); like the others it tests the best-validation weights."""
    from timm.models.vision_transformer import VisionTransformer

    size, width, heads = (480, 768, 12) if full_size else (224, 192, 3)
    if size not in bench.images:
        bench.images[size] = blog_images(bench, sorted(k for keys in task.split.values() for k in keys), size)
    images = bench.images[size]
    start = (time.time(), budget_clock())
    seed_everything(seed)

    def dataset(name: str) -> list[tuple[tuple[torch.Tensor, torch.Tensor], int]]:  # ((image, no context), label)
        no_context = torch.zeros(0)  # the loops pass a context along; WithoutContext drops it
        return [(((images[k].float() / 255 - 0.5) / 0.5, no_context), label_of(bench, k))  # mean/std 0.5
                for k in task.split[name]]

    def one_segment_per_clip(batch):  # -> the (segments, contexts, clip index per segment, labels) evaluate takes
        (images, contexts), labels = torch.utils.data.default_collate(batch)
        return images, contexts, torch.arange(len(labels)), labels

    loaders = {"train": DataLoader(dataset("train"), batch_size=32, shuffle=True)}
    for name in ("val", "test"):
        loaders[name] = DataLoader(dataset(name), batch_size=32, collate_fn=one_segment_per_clip)
    model = WithoutContext(VisionTransformer(img_size=size, patch_size=16, in_chans=3, num_classes=len(bench.classes),
                                             embed_dim=width, depth=12, num_heads=heads)).to(bench.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=HIGHEST_VAL_ACCURACY.mode, factor=0.3,
                                                         patience=3)
    loop = LoopConfig(epochs=epochs, patience=epochs, criterion=HIGHEST_VAL_ACCURACY)  # the blog stops at 30 epochs
    return fit_and_test("blog480" if full_size else "blog", bench, task, seed, model, loaders, optimizer,
                        Schedule(plateau), loop, start)


def mean_std(values: list[float], scale: float = 1.0) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values) * scale:.1f} ± {std * scale:.1f}"


def paired_difference(results: list[RunResult], contender: str, groups: dict[str, str] | None, *,
                      reference: str = "vitaudio", draws: int = 10_000, seed: int = 0) -> dict | None:
    """Accuracy of `reference` minus that of `contender` on the test clips of the runs they share (same split and
    seed), in points, with a 95 % interval from a paired bootstrap that resamples source groups (a group's clips,
    over all its runs, are drawn together: clips of one work or voice are not independent). None without pairs."""
    runs = {(r.split, r.seed): r for r in results if r.contender == reference and r.predicted}
    group_sums, group_counts = {}, {}
    n_pairs = 0
    for r in results:
        paired = runs.get((r.split, r.seed))
        if r.contender != contender or paired is None or not r.predicted:
            continue
        n_pairs += 1
        for key in paired.predicted.keys() & r.predicted.keys():
            truth, group = key.split("/")[0], groups.get(key, key) if groups else key
            diff = (paired.predicted[key] == truth) - (r.predicted[key] == truth)  # -1, 0 or 1
            group_sums[group] = group_sums.get(group, 0) + diff
            group_counts[group] = group_counts.get(group, 0) + 1
    if not group_counts:
        return None
    sums, counts = np.array(list(group_sums.values()), float), np.array(list(group_counts.values()), float)
    draw = np.random.default_rng(seed).integers(0, len(sums), size=(draws, len(sums)))  # (draws, n_groups)
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"runs": n_pairs, "clips": int(counts.sum()), "groups": len(sums),
            "difference": 100 * sums.sum() / counts.sum(), "low": 100 * low, "high": 100 * high}


def markdown(results: list[RunResult], classes: list[str], groups: dict[str, str] | None = None) -> str:
    """Summary table, paired differences with the default, per-class F1 (mean over runs) and confusion matrices
    (summed over runs)."""
    names = [c for c in CONTENDERS if any(r.contender == c for r in results)]
    names += sorted({r.contender for r in results} - set(names))  # variants of the default recipe
    runs = {c: [r for r in results if r.contender == c] for c in names}
    lines = ["| contender | runs | test accuracy % | balanced accuracy % | macro-F1 % | s per run: wall (budget "
             "clock) | epochs |", "| --- " * 7 + "|"]
    for c, rs in runs.items():
        epochs = [r.epochs for r in rs if r.epochs is not None]
        balanced = [r.balanced_accuracy for r in rs if r.balanced_accuracy is not None]  # old rows have none
        lines.append(f"| `{c}` | {len(rs)} | {mean_std([r.accuracy for r in rs], 100)} | "
                     f"{mean_std(balanced, 100) if balanced else '–'} | "
                     f"{mean_std([r.macro_f1 for r in rs], 100)} | {statistics.mean(r.seconds for r in rs):.0f} "
                     f"({statistics.mean(r.budget_seconds for r in rs):.0f}) | "
                     f"{f'{min(epochs)}–{max(epochs)}' if epochs else '–'} |")
    differences = {c: paired_difference(results, c, groups) for c in names if c != "vitaudio"}
    if any(differences.values()):
        lines += ["", "`vitaudio` minus each contender on the test clips of the runs both made (same folds and "
                      "seeds); the interval is a paired bootstrap over source groups (10,000 draws):", "",
                  "| contender | paired runs | test clips (groups) | `vitaudio` minus it, points | 95 % interval |",
                  "| --- " * 5 + "|"]
        lines += [f"| `{c}` | {d['runs']} | {d['clips']} ({d['groups']}) | {d['difference']:+.1f} | "
                  f"[{d['low']:+.1f}, {d['high']:+.1f}] |" for c, d in differences.items() if d]
    lines += ["", "Per-class F1 % (mean over the runs whose test split holds the class):", "",
              "| class | " + " | ".join(names) + " |", "| --- " * (len(names) + 1) + "|"]
    for name in classes:
        f1s = [[r.per_class_f1[name] for r in runs[c] if name in r.per_class_f1] for c in names]
        lines.append(f"| {name} | " + " | ".join(f"{100 * statistics.mean(f):.0f}" if f else "–" for f in f1s) + " |")
    lines += ["", "Confusion matrices summed over runs (rows true, columns predicted, classes in the order above):"]
    for c, rs in runs.items():
        matrix = np.sum([r.confusion_matrix for r in rs], axis=0)
        lines += ["", f"`{c}`:", "```", *(" ".join(f"{v:3d}" for v in row) for row in matrix), "```"]
    return "\n".join(lines)


def read_results(path: Path) -> list[RunResult]:
    return [RunResult(**json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


def check_same_data(path: Path, data: str) -> None:
    """Refuse to add runs on data of fingerprint `data` to a results.jsonl that holds runs on other data."""
    other = sorted({r.data for r in read_results(path) if r.data and r.data != data})
    if other:
        raise SystemExit(f"{path} holds runs on another build of the data (fingerprint {', '.join(other)}; this "
                         f"one is {data}): their accuracies do not compare. Pass another --out.")


def save_result(path: Path, result: RunResult) -> None:
    """Add a run to results.jsonl, replacing an earlier run of the same contender, split and seed (atomically)."""
    key = (result.contender, result.split, result.seed)
    rows = [r for r in read_results(path) if (r.contender, r.split, r.seed) != key] + [result]
    write_text_atomic(path, "".join(json.dumps(asdict(r)) + "\n" for r in rows))


def section(bench: Bench, tasks: list[Task], results: list[RunResult], budget_minutes: float) -> str:
    """The RESULTS.md section: machine, commands, preparation times, caveats, tables."""
    tested = {key.split("/")[0] for task in tasks for key in task.split["test"]}
    untested = [name for name in bench.classes if name not in tested]
    fingerprints = {r.data for r in results}
    return "\n".join([
        f"Data: {bench.root}, fingerprint {bench.data}"
        + (" (some rows predate fingerprints)" if "" in fingerprints else "") + ".",
        f"Machine: {machine()}. Training budget {budget_minutes:g} min per run on the budget clock (CPU time per "
        f"torch thread). Test clips: "
        f"{sum(len(t.split['test']) for t in tasks)}{' over all folds' if len(tasks) > 1 else ''}"
        + (f"; **no test clip of {', '.join(untested)}**" if untested else "") + f". Split files: {bench.out}/.",
        "", "Commands:", "", *sorted({f"    {r.command}" for r in results}), "",
        "Preparation, not in the run times (near 0 s where an earlier run's cache was reused): "
        + ", ".join(f"{name} {s:.0f} s" for name, s in bench.prep_seconds.items()) + ".",
        "`blog` is a CPU stand-in for the GTZAN ViT blog recipe (224x224 images and ViT-Tiny width instead of "
        "480x480 and ViT-Base); `blog480` is the blog's own. Accuracy ± is the sample std over runs (seeds x folds).",
        *([f"Imbalance: {', '.join(bench.reduced_classes)} (every other class) keep {bench.imbalance:.0%} of their "
           f"training clips (whole groups, drawn with the split seed); val and test clips untouched."]
          if bench.imbalance is not None else []),
        "",
        markdown(results, bench.classes, read_groups(bench.root / "metadata.csv")
                 if (bench.root / "metadata.csv").exists() else None)])


def write_results_md(heading: str, body: str) -> None:
    """Replace the `## heading` section of bench/RESULTS.md (or append it), keeping the other sections."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else (
        "# Accuracy results\n\nWritten by `bench/accuracy.py --write-results`; one section per data set and split.\n")
    head, *sections = text.split("\n## ")
    sections = [s for s in sections if s.split("\n", 1)[0] != heading] + [f"{heading}\n\n{body}\n"]
    RESULTS_MD.write_text("\n## ".join([head.rstrip("\n") + "\n", *sections]))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return (f"{cpu}, {os.cpu_count()} cores (torch {torch.get_num_threads()} threads), {platform.system()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("data/styles_dev"), help="audio class folders")
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS,
                        help="default: all but one blog: blog480 on a GPU, its stand-in blog on a CPU")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=0, help="K grouped folds instead of one 80/10/10 split")
    parser.add_argument("--split-file", type=Path, help="use this split instead of making one")
    parser.add_argument("--budget-minutes", type=float, default=15.0,
                        help="training budget per run, in minutes on the budget clock (CPU time per torch thread)")
    parser.add_argument("--out", type=Path, help="runs and results (default runs/accuracy/<root>-<split>)")
    parser.add_argument("--write-results", action="store_true", help="write the tables into bench/RESULTS.md")
    parser.add_argument("--recipe", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="a variant of the default: TrainConfig fields for the vitaudio contender, whose rows are "
                             "then named by them (e.g. --recipe ema_epochs=5 members=3)")
    parser.add_argument("--imbalance", type=float, metavar="F",
                        help="the classes at odd indices of the sorted class list keep this share of their "
                             "training clips (whole groups), in every split: unequal classes")
    parser.add_argument("--redo", action="store_true", help="run again the runs that OUT/results.jsonl holds")
    parser.add_argument("--table-only", action="store_true", help="train nothing: the tables of OUT/results.jsonl")
    parser.add_argument("--only", nargs="+", metavar="FOLD", help="train on these folds only (e.g. fold1), so that "
                                                                   "several processes can share the folds")
    args = parser.parse_args()
    if args.folds == 1 or args.folds == 2:
        parser.error("--folds needs K >= 3 (test, val and train folds)")
    if args.imbalance is not None and not 0 < args.imbalance < 1:
        parser.error(f"--imbalance {args.imbalance}: a share in (0, 1)")
    if args.imbalance is not None and args.split_file:
        parser.error("--imbalance cuts the split it makes: leave out --split-file")
    label = f"{args.root.name}-" + (args.split_file.stem if args.split_file else
                                     f"split{args.split_seed}" + (f"-{args.folds}folds" if args.folds else ""))
    label += f"-imbalance{args.imbalance:g}" if args.imbalance is not None else ""
    out = args.out or Path("runs/accuracy") / label
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    mel_root = cached_melify(args.root)
    bench = Bench(args.root, mel_root, MelClips(mel_root).classes, out, args.budget_minutes * 60,
                  resolve_device("auto"), {"melify": time.time() - start},
                  data=data_fingerprint(args.root, list(source_paths(mel_root).values())), imbalance=args.imbalance)
    tasks = make_tasks(bench, args.split_seed, args.folds, args.split_file)
    skipped_blog = "blog" if bench.device.type == "cuda" else "blog480"  # the full-size recipe is a GPU's work
    contenders = args.contenders or [c for c in CONTENDERS if c != skipped_blog]
    command = "python bench/accuracy.py " + shlex.join(sys.argv[1:])
    recipe = parse_recipe(args.recipe)
    runners = {"vitaudio": partial(run_vitaudio, recipe=recipe), "classical": run_classical,
               "cnn": run_cnn, "blog": run_blog,
               "blog480": partial(run_blog, full_size=True)}
    results_path = out / "results.jsonl"
    check_same_data(results_path, bench.data)
    done = {(r.contender, r.split, r.seed) for r in read_results(results_path)} if not args.redo else set()
    # contenders innermost: an interrupted benchmark still has every contender on the same folds
    for task in [] if args.table_only else [t for t in tasks if not args.only or t.name in args.only]:
        for seed in args.seeds:
            for contender in contenders:
                if (recipe_name(recipe) if contender == "vitaudio" else contender, task.name, seed) in done:
                    print(f"== {contender} {task.name} seed {seed}: in {results_path} already (--redo runs it "
                          f"again)")
                    continue
                print(f"== {contender} {task.name} seed {seed} (budget {args.budget_minutes:g} min)", flush=True)
                result = replace(runners[contender](bench, task, seed), command=command, data=bench.data)
                print(f"== {contender} {task.name} seed {seed}: test accuracy {result.accuracy:.3f}, balanced "
                      f"{result.balanced_accuracy:.3f}, macro F1 {result.macro_f1:.3f}, {result.seconds:.0f} s "
                      f"({result.budget_seconds:.0f} s budget clock), {result.epochs} epochs", flush=True)
                save_result(results_path, result)
    heading = f"{args.root.name} (build {bench.data}): " + (f"split file {args.split_file}" if args.split_file else
                                       f"{args.folds} grouped folds" if args.folds else "one grouped 80/10/10 split")
    heading += "" if args.split_file else f", split seed {args.split_seed}"
    heading += f", imbalance {args.imbalance:g}" if args.imbalance is not None else ""
    body = section(bench, tasks, read_results(results_path), args.budget_minutes)
    print(f"\n## {heading}\n\n{body}")
    if args.write_results:
        write_results_md(heading, body)
        print(f"\nwritten to {RESULTS_MD}")


if __name__ == "__main__":
    main()
