import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_separable_set

from vitaudio.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from vitaudio.config import TrainConfig
from vitaudio.engine import train_one_epoch
from vitaudio.errors import RunDirError
from vitaudio.inference import pipeline
from vitaudio.model import ViT, ViTConfig
from vitaudio.train import train

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = {"config.json", "split.json", "metrics.jsonl", "best.pt", "last.pt", "test_report.json",
             "test_predictions.csv", "confusion_matrix.png", "curves.png"}


def test_train_py_end_to_end_writes_every_run_file(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=10)
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--root", str(root), "--model", "mini",
                             "--epochs", "2", "--segment-seconds", "1", "--members", "1",
                             "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert RUN_FILES <= {p.name for p in (tmp_path / "run").iterdir()}
    assert "test accuracy" in result.stdout and str(tmp_path / "run") in result.stdout
    assert "M parameters" in result.stdout
    assert len(list(tmp_path.glob("audio.mel-*/*/*.png"))) == 30  # the melify cache sits next to the root
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert set(metrics[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    report = json.loads((tmp_path / "run/test_report.json").read_text())
    assert report["n_clips"] == 3 and report["classes"] == ["bass", "mid", "treble"]
    assert report["best_epoch"] == min(metrics, key=lambda m: m["val_loss"])["epoch"]  # best.pt: lowest val loss
    assert np.asarray(report["confusion_matrix"]).sum() == 3
    with open(tmp_path / "run/test_predictions.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 and rows[0]["clip"].endswith(".wav") and rows[0]["label3"]
    split = json.loads((tmp_path / "run/split.json").read_text())
    assert sum(len(v) for v in split.values()) == 30 and split["train"][0].endswith(".wav")


def test_default_run_trains_two_members_and_tests_their_ensemble(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=10)
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--root", str(root), "--epochs", "2",
                             "--segment-seconds", "1", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "run"
    assert RUN_FILES - {"last.pt"} <= {p.name for p in run_dir.iterdir()} and not (run_dir / "last.pt").exists()
    for member, seed in ((0, 0), (1, 1)):  # each member is a whole one-model run of its own seed
        assert RUN_FILES <= {p.name for p in (run_dir / f"member{member}").iterdir()}
        assert json.loads((run_dir / f"member{member}/config.json").read_text())["train"]["seed"] == seed
    members = [load_checkpoint(run_dir / f"member{k}/best.pt") for k in (0, 1)]
    ensemble = load_checkpoint(run_dir / "best.pt")
    assert ensemble["members"] == 2 and ensemble["member_epochs"] == [m["epoch"] for m in members]
    for k, member in enumerate(members):
        assert all(torch.equal(ensemble["model"][f"members.{k}.{name}"], value)
                   for name, value in member["model"].items())
    n_mels = members[0]["model_config"]["n_mels"]  # 2 s clips: the short-clip mel parameters, 64 bands
    mel, context = torch.randn(3, 1, n_mels, 96), torch.randn(3, 2 * n_mels)
    singles = []
    for member in members:
        model = ViT(ViTConfig(**member["model_config"])).eval()
        model.load_state_dict(member["model"])
        singles.append(model(mel, context))
    torch.testing.assert_close(model_from_checkpoint(ensemble).eval()(mel, context), (singles[0] + singles[1]) / 2)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m["member"], m["epoch"]) for m in metrics] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    report = json.loads((run_dir / "test_report.json").read_text())
    assert report["n_clips"] == 3 and report["best_epoch"] == ensemble["member_epochs"]
    assert result.stdout.count("test accuracy") == 3  # each member's, then the ensemble's


def test_short_training_on_separable_data_beats_chance(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=20, seconds=1.5)
    run_dir = train(TrainConfig(root=str(root), model="mini", epochs=8, warmup_epochs=1, batch_size=8,
                                segment_seconds=1.0, lr=1e-3, out=str(tmp_path / "run")))
    report = json.loads((run_dir / "test_report.json").read_text())
    assert report["n_clips"] == 6 and report["accuracy"] >= 0.8  # chance is 1/3


def test_split_file_is_honoured_and_written_back(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=4, seconds=1.0)
    split = {"train": [f"{c}/{c}.0000{i}.wav" for c in ("bass", "mid", "treble") for i in (0, 1)],
             "val": ["bass/bass.00002.wav", "mid/mid.00002.wav"], "test": ["treble/treble.00003.wav"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    run_dir = train(TrainConfig(root=str(root), model="mini", epochs=1, segment_seconds=0.5,
                                split_file=str(tmp_path / "split.json"), out=str(tmp_path / "run")))
    assert json.loads((run_dir / "split.json").read_text()) == {k: sorted(v) for k, v in split.items()}
    assert json.loads((run_dir / "test_report.json").read_text())["n_clips"] == 1


def test_non_empty_run_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/old.txt").write_text("x")
    root = write_separable_set(tmp_path / "audio", per_class=10, seconds=0.5)
    with pytest.raises(RunDirError, match="not empty"):
        train(TrainConfig(root=str(root), model="mini", epochs=1, out=str(tmp_path / "run")))


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    config = ViTConfig(n_mels=32, n_classes=3, dim=32, depth=2, heads=2, patch_size=(8, 8), patch_stride=(8, 8))
    model = ViT(config).eval()
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "model_config": config.__dict__,
                                        "mel_config": {}, "classes": ["a", "b", "c"], "normalization": {},
                                        "segment": {}})
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    restored = ViT(ViTConfig(**checkpoint["model_config"])).eval()
    restored.load_state_dict(checkpoint["model"])
    mel = torch.randn(2, 1, 32, 40)
    assert torch.equal(model(mel), restored(mel))
    assert not list(tmp_path.glob(".*"))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    torch.save({"format": "vitaudio-checkpoint-1", "model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_checkpoints_are_named(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a vitaudio checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "foreign.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_non_finite_loss_stops_training_with_a_clear_message():
    config = ViTConfig(n_mels=16, n_classes=2, dim=16, depth=1, heads=2, patch_size=(8, 8), patch_stride=(8, 8))
    model = ViT(config)
    loader = [((torch.full((2, 1, 16, 16), float("nan")), torch.zeros(2, 32)), torch.tensor([0, 1]))]
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(FloatingPointError, match="lower --lr"):
        train_one_epoch(model, loader, optimizer, device=torch.device("cpu"), progress=False)


def test_train_accuracy_under_mixup_counts_the_label_with_the_larger_share():
    class NearestLabel(torch.nn.Module):  # input filled with its label (0 or 1): predicts the nearest label
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def forward(self, mel, context):
            value = mel.mean(dim=(1, 2, 3)).unsqueeze(1)  # (B, 1)
            torch.testing.assert_close(context.mean(dim=1, keepdim=True), value)  # mixed with the same weights
            return -(value - torch.tensor([0.0, 1.0])) ** 2 + 0 * self.unused  # (B, 2)

    torch.manual_seed(0)
    labels = torch.arange(64) % 2
    mels, contexts = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4), labels.float().view(-1, 1).expand(-1, 8)
    loader = [((mels, contexts), labels)] * 8
    model = NearestLabel()
    stats = train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.0), device=torch.device("cpu"),
                            mixup_alpha=0.3, progress=False)
    assert stats.n_seen == 512 and stats.accuracy == 1.0  # counted against the first label it is ~0.6


def test_one_second_words_get_short_clip_features_and_whole_clip_segments(tmp_path):
    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=1, out=str(tmp_path / "run")))
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["mel"]["sample_rate"], saved["mel"]["hop_length"], saved["mel"]["n_mels"]) == (16000, 160, 64)
    assert saved["segment"]["frames"] == 101 and saved["train"]["segment_seconds"] == 1.01  # one segment per clip
    assert saved["model"]["patch_stride"] == [16, 8]  # 12 patches overlapping in time rather than 6
    clf = pipeline(run_dir / "best.pt", device="cpu")
    assert clf(str(next(root.rglob("*.wav"))))[0]["label"] in saved["classes"]


def test_segments_shorter_than_eight_patches_get_patches_overlapping_by_half_in_time():
    from vitaudio.run import patch_time_stride

    assert patch_time_stride(129, 16, 8) == 16  # 3 s of music at 43 frames a second: 8 patches
    assert patch_time_stride(101, 16, 8) == 8  # a one-second word at 100 frames a second: 12 instead of 6
    assert patch_time_stride(40, 8, 8) == 8  # never finer than the stem's output


def test_a_stride_the_stem_cannot_take_is_refused_before_anything_is_written(tmp_path):
    from vitaudio.errors import ConfigError

    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    with pytest.raises(ConfigError, match="time_stride 12"):  # the stem halves the mel 3 times: multiples of 8
        train(TrainConfig(root=str(root), epochs=1, members=1, time_stride=12, out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_a_given_segment_length_wins_over_the_derived_one(tmp_path):
    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=1, segment_seconds=0.5, out=str(tmp_path / "r")))
    assert json.loads((run_dir / "config.json").read_text())["segment"]["frames"] == 50


def test_with_distill_each_member_after_the_first_learns_from_the_ones_before(tmp_path, monkeypatch):
    from vitaudio import ensemble

    teachers, real_train_model = [], ensemble.train_model

    def spy(config, *args, teacher=None, **kwargs):
        teachers.append(teacher)
        return real_train_model(config, *args, teacher=teacher, **kwargs)

    monkeypatch.setattr(ensemble, "train_model", spy)
    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=3, distill=0.5, out=str(tmp_path / "run")))
    assert teachers[0] is None and isinstance(teachers[1], ViT) and len(teachers[2].members) == 2
    first = load_checkpoint(run_dir / "member0/best.pt")["model"]
    assert all(torch.equal(teachers[1].state_dict()[name], value) for name, value in first.items())
    assert json.loads((run_dir / "config.json").read_text())["train"]["distill"] == 0.5


def test_with_rotate_val_later_members_validate_on_other_clips_of_the_same_pool(tmp_path):
    root = write_separable_set(tmp_path / "words", per_class=12, seconds=1.0, sample_rate=16000)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=2, rotate_val=True, out=str(tmp_path / "run")))
    first, second = (json.loads((run_dir / f"member{k}/split.json").read_text()) for k in (0, 1))
    assert first["test"] == second["test"] and first["val"] != second["val"]
    assert len(first["val"]) == len(second["val"])
    assert sorted(first["train"] + first["val"]) == sorted(second["train"] + second["val"])
    headers = [load_checkpoint(run_dir / f"member{k}/best.pt")["normalization"] for k in (0, 1)]
    assert headers[0] == headers[1]  # one standardisation for the whole ensemble


def test_teacher_cnn_trains_a_cnn_first_and_every_member_learns_from_it(tmp_path, monkeypatch):
    from vitaudio import ensemble
    from vitaudio.model import ConvNet

    teachers, real_train_model = [], ensemble.train_model

    def spy(config, *args, teacher=None, architecture="vit", **kwargs):
        teachers.append((architecture, teacher))
        return real_train_model(config, *args, teacher=teacher, architecture=architecture, **kwargs)

    monkeypatch.setattr(ensemble, "train_model", spy)
    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=1, distill=0.5, teacher="cnn",
                                out=str(tmp_path / "run")))
    assert [arch for arch, _ in teachers] == ["cnn", "vit"] and teachers[0][1] is None
    assert isinstance(teachers[1][1], ConvNet)
    cnn = load_checkpoint(run_dir / "teacher/best.pt")
    assert cnn["architecture"] == "cnn" and isinstance(model_from_checkpoint(cnn), ConvNet)
    assert (run_dir / "member0/best.pt").exists() and (run_dir / "teacher/test_report.json").exists()
    shipped = load_checkpoint(run_dir / "best.pt")
    assert "architecture" not in shipped and isinstance(model_from_checkpoint(shipped), ViT)  # the ViT ships
    clf = pipeline(run_dir / "best.pt", device="cpu")
    assert clf(str(next(root.rglob("*.wav"))))[0]["label"] in shipped["classes"]


def test_unlabelled_clips_are_learnt_from_the_teacher_and_copies_of_held_out_clips_are_refused(tmp_path, capsys):
    root = write_separable_set(tmp_path / "words", per_class=8, seconds=1.0, sample_rate=16000)
    pool = write_separable_set(tmp_path / "more", per_class=3, seconds=1.0, sample_rate=16000)
    flat = tmp_path / "pool"  # no class folders: unlabelled audio in any layout
    for i, wav in enumerate(sorted(pool.rglob("*.wav"))):
        (flat / f"deep{i % 2}").mkdir(parents=True, exist_ok=True)
        wav.rename(flat / f"deep{i % 2}" / f"clip{i}.wav")
    config = TrainConfig(root=str(root), epochs=1, members=2, distill=0.5, unlabelled=str(flat),
                         out=str(tmp_path / "run"))
    run_dir = train(config)
    split = json.loads((run_dir / "split.json").read_text())
    out = capsys.readouterr().out
    assert f"clips train {len(split['train'])} + 9 unlabelled" in out  # member 1
    assert out.count("unlabelled,") == 1  # member 0 has no teacher, so nothing to learn unlabelled clips from
    held_out = split["test"][0]  # the same audio under another name, in the pool
    (flat / "copy_of_a_test_clip.wav").write_bytes((root / held_out).read_bytes())
    train(TrainConfig(**{**config.__dict__, "out": str(tmp_path / "run2"), "split_file": str(run_dir / "split.json")}))
    out = capsys.readouterr().out
    assert "refused 1 of the 10 clips" in out and "+ 9 unlabelled" in out


def test_unlabelled_without_a_teacher_is_refused_before_anything_is_written(tmp_path):
    from vitaudio.errors import ConfigError

    with pytest.raises(ConfigError, match="--distill"):
        train(TrainConfig(root=str(tmp_path), unlabelled=str(tmp_path), out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_reports_give_balanced_accuracy_beside_accuracy_so_a_majority_guess_shows():
    from vitaudio.report import classification_report

    labels = torch.tensor([0] * 8 + [1] * 2)  # 8 clips of one class, 2 of the other; the model always says 0
    report = classification_report(torch.tensor([[1.0, 0.0]] * 10), labels, ["common", "rare"])
    assert report["accuracy"] == 0.8 and report["balanced_accuracy"] == 0.5  # the rare class is never found
    three = classification_report(torch.eye(3)[[0, 0, 1]], torch.tensor([0, 1, 1]), ["a", "b", "c"])
    assert three["balanced_accuracy"] == 0.75  # (1 + 1/2) / 2: class c has no clips, so it is left out


def test_amp_on_cpu_is_bf16_autocast_and_can_be_turned_off():
    from vitaudio.scoring import autocast

    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert (a @ a).dtype == torch.float32
    assert TrainConfig(amp=False).amp_on(torch.device("cpu")) is False


def test_amp_is_on_by_default_for_cuda_and_for_cpus_with_bf16_arithmetic(monkeypatch):
    import vitaudio.config

    for has_bf16 in (True, False):  # CPUs without it would emulate bf16, slower than fp32
        monkeypatch.setattr(vitaudio.config, "cpu_has_bf16", lambda answer=has_bf16: answer)
        assert TrainConfig().amp_on(torch.device("cpu")) is has_bf16
        assert TrainConfig().amp_on(torch.device("cuda")) is True


def test_a_mixed_precision_run_is_tested_in_fp32_as_its_users_will_score_it(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=8)
    run_dir = train(TrainConfig(root=str(root), epochs=2, members=1, amp=True, segment_seconds=1.0,
                                out=str(tmp_path / "run")))
    clf = pipeline(run_dir / "best.pt", device="cpu")
    with open(run_dir / "test_predictions.csv") as file:
        rows = list(csv.DictReader(file))
    for row in rows:  # bf16 scores would differ from fp32 ones by ~1e-3
        top = clf(str(root / row["clip"]))[0]
        assert top["label"] == row["label1"] and top["score"] == pytest.approx(float(row["score1"]), abs=2e-4)
