"""Unequal classes: `--balance` draws every class alike (a sampler) or weights the loss by inverse class size, and
`auto` does so only when the training classes differ by more than 2x; bench/accuracy.py's `--imbalance` makes such
classes out of a balanced data set."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_separable_set

from vitaudio import run
from vitaudio.config import TrainConfig, config_of_run, parse_args
from vitaudio.data import NO_LABEL
from vitaudio.engine import inverse_frequency_weights, labels_loss
from vitaudio.errors import ConfigError
from vitaudio.train import train

if "bench_accuracy" not in sys.modules:  # a script, not a package; test_bench_accuracy may have loaded it
    spec = importlib.util.spec_from_file_location("bench_accuracy", Path(__file__).parents[1] / "bench" / "accuracy.py")
    sys.modules["bench_accuracy"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["bench_accuracy"])
accuracy = sys.modules["bench_accuracy"]


def test_balanced_sampler_draws_the_minority_class_about_as_often_as_the_majority():
    labels = [0] * 90 + [1] * 10
    sampler = run.balanced_sampler(labels, inverse_frequency_weights(labels, 2))
    torch.manual_seed(0)
    drawn = torch.tensor(labels)[[i for _ in range(20) for i in sampler]]  # 20 epochs of 100 draws
    assert len(sampler) == 100
    assert 0.45 < drawn.float().mean() < 0.55  # share of the minority class: 0.5 ± 0.011 (one std)


def test_balanced_sampler_leaves_the_unlabelled_pool_its_share():
    labels = [0] * 90 + [1] * 10
    sampler = run.balanced_sampler(labels, inverse_frequency_weights(labels, 2), n_unlabelled=50)
    torch.manual_seed(0)
    drawn = torch.tensor([i for _ in range(30) for i in sampler])  # 30 epochs of 150 draws
    assert len(sampler) == 150
    pool_share = (drawn >= 100).float().mean()
    minority_share = ((drawn >= 90) & (drawn < 100)).float().mean()
    assert abs(pool_share - 1 / 3) < 0.03 and abs(minority_share - 1 / 3) < 0.03  # std ~0.007


def test_balanced_sampler_draws_from_the_global_generator_so_a_resumed_run_draws_the_same():
    sampler = run.balanced_sampler([0, 0, 0, 1], [2 / 3, 2.0])
    torch.manual_seed(3)
    saved = torch.get_rng_state()  # as last.pt keeps it
    first = list(sampler)
    torch.set_rng_state(saved)
    assert list(sampler) == first


def test_weighted_loss_is_the_hand_computed_weighted_cross_entropy():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 1, NO_LABEL])  # the unlabelled clip counts neither in the sum nor the mean
    weights = inverse_frequency_weights([0, 0, 0, 1], 3)
    assert weights == pytest.approx([4 / (2 * 3), 4 / (2 * 1), 1.0])  # N / (K n_c); class 2 has no clips
    log_p = logits[:4].log_softmax(dim=1)  # (4, 3)
    for smoothing in (0.0, 0.1):
        per_clip = -(1 - smoothing) * log_p[torch.arange(4), labels[:4]] - smoothing * log_p.mean(dim=1)  # (4,)
        expected = (torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0]) * per_clip).sum() / 4
        torch.testing.assert_close(labels_loss(logits, labels, smoothing, torch.tensor(weights)), expected)


def test_weights_average_one_over_the_training_clips_and_are_all_one_for_equal_classes():
    labels = [0] * 7 + [1] * 2 + [3] * 11
    weights = inverse_frequency_weights(labels, 4)
    assert sum(weights[y] for y in labels) / len(labels) == pytest.approx(1.0)
    assert inverse_frequency_weights([0, 1, 2, 2, 1, 0], 3) == [1.0, 1.0, 1.0]
    logits, batch = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    torch.testing.assert_close(labels_loss(logits, batch, 0.1, torch.ones(3)), labels_loss(logits, batch, 0.1))


def test_auto_balance_compensates_only_above_twice_and_says_so(capsys):
    classes = ["jazz", "rock"]
    assert run.class_balance(TrainConfig(), classes, [0] * 4 + [1] * 2, distributed=False, log=True) == "none"
    assert capsys.readouterr().out == ""  # exactly 2x: left as it is
    chosen = run.class_balance(TrainConfig(), classes, [0] * 2 + [1] * 5, distributed=False, log=True)
    assert chosen == run.AUTO_BALANCE
    assert capsys.readouterr().out == (f"classes differ in size up to 2.5x (rock 5, jazz 2 training clips): "
                                       f"{run.BALANCERS[run.AUTO_BALANCE]} (--balance none to turn off)\n")


def test_balance_none_never_compensates_and_the_others_always_do(capsys):
    classes, labels = ["jazz", "rock"], [0] * 80 + [1] * 16
    assert run.class_balance(TrainConfig(balance="none"), classes, labels, distributed=False, log=True) == "none"
    assert capsys.readouterr().out == ""
    for balance in ("sampler", "weights"):
        assert run.class_balance(TrainConfig(balance=balance), classes, [0, 1], distributed=False, log=True) == balance
        assert run.BALANCERS[balance] in capsys.readouterr().out  # on even for equal classes, when asked for


def test_under_torchrun_the_sampler_gives_way_to_the_weighted_loss(capsys):
    chosen = run.class_balance(TrainConfig(balance="sampler"), ["a", "b"], [0] * 9 + [1], distributed=True, log=True)
    assert chosen == "weights" and "not sharded across processes" in capsys.readouterr().out


@pytest.fixture(scope="module")
def unequal_words(tmp_path_factory) -> tuple[Path, Path]:
    """Tones of 3 classes, 1 s, and a split file whose training clips are 3 bass, 9 mid, 9 treble (3x)."""
    base = tmp_path_factory.mktemp("unequal")
    root = write_separable_set(base / "words", per_class=11, seconds=1.0, sample_rate=16000)
    clips = {c: [f"{c}/{c}.{i:05d}.wav" for i in range(11)] for c in ("bass", "mid", "treble")}
    split = {"train": clips["bass"][:3] + clips["mid"][:9] + clips["treble"][:9],
             "val": [clips[c][9] for c in clips], "test": [clips[c][10] for c in clips]}
    (base / "split.json").write_text(json.dumps(split))
    return root, base / "split.json"


@pytest.mark.parametrize("balance", ["auto", "sampler", "weights", "none"])
def test_train_wires_the_chosen_balance_into_the_loader_or_the_loss(balance, unequal_words, tmp_path, monkeypatch,
                                                                     capsys):
    seen, real_fit = {}, run.fit

    def spy(model, train_loader, val_loader, optimizer, schedule, loop, **kwargs):
        seen.update(sampler=type(train_loader.sampler).__name__, class_weights=loop.class_weights)
        return real_fit(model, train_loader, val_loader, optimizer, schedule, loop, **kwargs)

    monkeypatch.setattr(run, "fit", spy)
    root, split_file = unequal_words
    train(TrainConfig(root=str(root), split_file=str(split_file), epochs=1, members=1, balance=balance,
                      out=str(tmp_path / "run")))
    used = run.AUTO_BALANCE if balance == "auto" else balance
    assert seen["sampler"] == ("WeightedRandomSampler" if used == "sampler" else "RandomSampler")
    expected_weights = pytest.approx([21 / (3 * 3), 21 / (3 * 9), 21 / (3 * 9)])  # N / (K n_c)
    assert seen["class_weights"] == (expected_weights if used == "weights" else None)
    out = capsys.readouterr().out
    assert ("classes differ in size up to 3.0x (mid 9, bass 3 training clips)" in out) == (used != "none")


def test_unknown_balance_is_refused_before_anything_is_written(tmp_path):
    config, _ = parse_args(["--balance", "bogus", "--root", str(tmp_path), "--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match="--balance bogus: choose from auto, sampler, weights, none"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_a_run_saved_before_balance_resumes_without_it(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {"epochs": 5, "members": 1}}))
    assert config_of_run(tmp_path).balance == "none"  # as it was trained


def split_of_voices() -> tuple[dict[str, list[str]], dict[str, str]]:
    """4 words, each said twice by each of 10 voices: train voices 0-5, val 6-7, test 8-9; clip key -> voice."""
    keys = [f"{word}/{word}.v{voice}.{take}" for word in ("down", "go", "left", "no") for voice in range(10)
            for take in range(2)]
    groups = {key: key.split(".")[1] for key in keys}
    voice = {key: int(groups[key][1:]) for key in keys}
    split = {"train": sorted(k for k in keys if voice[k] < 6), "val": sorted(k for k in keys if voice[k] in (6, 7)),
             "test": sorted(k for k in keys if voice[k] >= 8)}
    return split, groups


def test_imbalance_cuts_only_the_training_clips_of_every_other_class_by_whole_groups():
    split, groups = split_of_voices()
    bench = accuracy.Bench(Path("words"), Path("words.mel"), ["down", "go", "left", "no"], Path("out"), 60.0,
                           torch.device("cpu"), imbalance=0.34)
    assert bench.reduced_classes == ["go", "no"]
    cut = accuracy.imbalanced(split, bench.reduced_classes, groups, 0.34, seed=0)
    assert cut["val"] == split["val"] and cut["test"] == split["test"]
    assert set(cut["train"]) <= set(split["train"])
    for word in ("down", "left"):
        assert [k for k in cut["train"] if k.startswith(word)] == [k for k in split["train"] if k.startswith(word)]
    for word in ("go", "no"):
        kept = [k for k in cut["train"] if k.startswith(word)]
        assert len(kept) == 4  # 0.34 x 12 clips, in groups of 2
        kept_voices = {groups[k] for k in kept}
        assert all((k in kept) == (groups[k] in kept_voices) for k in split["train"] if k.startswith(word))
    assert accuracy.imbalanced(split, ["go", "no"], groups, 0.34, seed=0) == cut  # seeded
    by_clip = accuracy.imbalanced(split, ["go"], None, 0.25, seed=0)
    assert sum(k.startswith("go/") for k in by_clip["train"]) == 3  # no groups: cut clip by clip


def test_imbalanced_folds_are_written_to_the_split_files_and_another_cut_is_refused(tmp_path, monkeypatch):
    split, groups = split_of_voices()
    keys = sorted(k for part in split.values() for k in part)
    classes = ["down", "go", "left", "no"]

    class Clips:  # what make_tasks reads of a melify root
        def __init__(self, root):
            self.keys, self.targets = keys, [classes.index(k.split("/")[0]) for k in keys]

        def __len__(self):
            return len(self.keys)

    monkeypatch.setattr(accuracy, "MelClips", Clips)
    monkeypatch.setattr(accuracy, "source_paths", lambda mel_root: {k: f"{k}.wav" for k in keys})
    root = tmp_path / "words"
    root.mkdir()
    (root / "metadata.csv").write_text("clip,group\n" + "".join(f"{k}.wav,{g}\n" for k, g in groups.items()))
    bench = accuracy.Bench(root, tmp_path / "words.mel", classes, tmp_path / "out", 60.0, torch.device("cpu"),
                           imbalance=0.5)
    bench.out.mkdir()
    tasks = accuracy.make_tasks(bench, split_seed=0, folds=5, split_file=None)
    for task in tasks:
        written = json.loads(task.split_file.read_text())
        assert sorted(k.removesuffix(".wav") for k in written["train"]) == task.split["train"]
        for word, n_train in (("down", 12), ("go", 6), ("left", 12), ("no", 6)):  # 3 train folds of 2 voices x 2
            assert sum(k.startswith(f"{word}/") for k in task.split["train"]) == n_train
        assert all(sum(k.startswith(f"{w}/") for k in task.split["test"]) == 4 for w in classes)  # untouched
    with pytest.raises(SystemExit, match="not the split --imbalance 0.25 makes"):
        accuracy.make_tasks(accuracy.Bench(root, bench.mel_root, classes, bench.out, 60.0, torch.device("cpu"),
                                           imbalance=0.25), split_seed=0, folds=5, split_file=None)
