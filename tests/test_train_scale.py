"""Training over time and beyond one process: resume after kill -9, torchrun DDP, fine-tuning, evaluate."""
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import write_separable_set
from test_train import REPO

from vitaudio.checkpoint import load_checkpoint, load_initial_weights, save_checkpoint
from vitaudio.config import TrainConfig
from vitaudio.errors import RunDirError
from vitaudio.evaluate import evaluate_checkpoint
from vitaudio.model import ViT, ViTConfig, ViTEnsemble
from vitaudio.train import train


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_cli(*args, cwd) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *map(str, args)]


@pytest.fixture(scope="module")
def audio_root(tmp_path_factory) -> Path:
    return write_separable_set(tmp_path_factory.mktemp("data") / "audio", per_class=10, seconds=1.0)


def test_kill_9_mid_training_then_resume_continues_the_metrics(audio_root, tmp_path):
    run_dir = tmp_path / "run"
    args = ["--root", audio_root, "--model", "mini", "--segment-seconds", "0.5", "--batch-size", "4", "--members", "1"]
    proc = subprocess.Popen(train_cli(*args, "--epochs", "40", "--out", run_dir, cwd=tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and len(read_metrics(run_dir)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_metrics(run_dir))
    assert 2 <= done < 40 and not (run_dir / "test_report.json").exists()
    last_epoch = torch.load(run_dir / "last.pt", weights_only=True)["epoch"]

    result = subprocess.run(train_cli("--resume", run_dir, "--epochs", str(last_epoch + 2), cwd=tmp_path),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming at epoch {last_epoch + 1}" in result.stdout
    assert [m["epoch"] for m in read_metrics(run_dir)] == list(range(1, last_epoch + 3))
    assert (run_dir / "test_report.json").exists()
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 40  # the saved config is kept


def test_resume_restores_optimizer_and_rng_state(audio_root, tmp_path):
    config = TrainConfig(root=str(audio_root), model="mini", epochs=2, segment_seconds=0.5, batch_size=4,
                         patience=100, members=1, out=str(tmp_path / "straight"))
    straight = train(config)
    config.out, config.epochs = str(tmp_path / "split"), 1
    interrupted = train(config)
    config.epochs = 2
    train(config, resume=interrupted)
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (straight, interrupted))
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-5) for k in a["model"])
    assert read_metrics(straight)[-1]["train_loss"] == pytest.approx(read_metrics(interrupted)[-1]["train_loss"])


def test_interrupted_ensemble_resumes_to_the_same_members(audio_root, tmp_path):
    config = TrainConfig(root=str(audio_root), epochs=2, segment_seconds=0.5, batch_size=4, patience=100,
                         out=str(tmp_path / "straight"))
    straight = train(config)
    interrupted = train(replace(config, epochs=1, out=str(tmp_path / "split")))
    shutil.rmtree(interrupted / "member1")  # as if killed before member 1's first epoch ended
    (interrupted / "member1").mkdir()
    result = subprocess.run(train_cli("--resume", interrupted, "--epochs", "2", cwd=tmp_path),
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming at epoch 2" in result.stdout  # member 0 continues, member 1 starts afresh
    a, b = (load_checkpoint(d / "best.pt") for d in (straight, interrupted))
    assert a["members"] == b["members"] == 2 and a["member_epochs"] == b["member_epochs"]
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-5) for k in a["model"])


def test_run_whose_lr_plateau_watched_accuracy_is_refused_on_resume(audio_root, tmp_path):
    run_dir = train(TrainConfig(root=str(audio_root), model="mini", epochs=1, segment_seconds=0.5, batch_size=4,
                                members=1, out=str(tmp_path / "old")))
    last = load_checkpoint(run_dir / "last.pt")
    last["scheduler"]["mode"] = "max"  # what runs before the switch to val loss saved
    save_checkpoint(run_dir / "last.pt", last)
    with pytest.raises(RunDirError, match="watched val accuracy.*--init-from"):
        train(TrainConfig(root=str(audio_root), model="mini", epochs=2, segment_seconds=0.5, batch_size=4,
                          members=1, out=str(run_dir)), resume=run_dir)


def test_torchrun_two_cpu_processes_train_and_rank_0_writes_one_checkpoint(audio_root, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "train.py"),
         "--root", str(audio_root), "--model", "mini", "--epochs", "2", "--segment-seconds", "0.5",
         "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2 done" in result.stderr and "rank 1/2 done" in result.stderr
    assert "x 2 processes" in result.stdout and result.stdout.count("test accuracy") == 3  # 2 members, ensemble
    assert sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*.pt")) == [
        "best.pt", "member0/best.pt", "member0/last.pt", "member1/best.pt", "member1/last.pt"]
    assert [(m["member"], m["epoch"]) for m in read_metrics(tmp_path / "run")] == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_init_from_fine_tunes_on_a_new_label_set(audio_root, tmp_path):
    source = train(TrainConfig(root=str(audio_root), model="mini", epochs=1, segment_seconds=0.5,
                               out=str(tmp_path / "source")))
    new_root = write_separable_set(tmp_path / "two", per_class=10, seconds=1.0)
    for extra in ("treble",):
        for p in (new_root / extra).iterdir():
            p.unlink()
        (new_root / extra).rmdir()
    tuned = train(TrainConfig(root=str(new_root), epochs=1, segment_seconds=0.5, init_from=str(source / "best.pt"),
                              out=str(tmp_path / "tuned")))
    old, new = (torch.load(d / "best.pt", weights_only=True) for d in (source, tuned))
    assert new["classes"] == ["bass", "mid"] and new["model"]["members.1.head.fc.weight"].shape[0] == 2
    assert new["model_config"]["dim"] == old["model_config"]["dim"]  # the architecture comes from the checkpoint


def test_fine_tuned_ensemble_member_starts_from_the_same_member_of_the_source():
    config = ViTConfig(n_mels=16, n_classes=3, dim=16, depth=1, heads=2, patch_size=(8, 8), patch_stride=(8, 8))
    source = {"model": ViTEnsemble(config, 2).state_dict(), "members": 2, "classes": ["a", "b", "c"]}
    for member in (0, 1, 2):  # a third member wraps around to the source's first
        model = ViT(config)
        load_initial_weights(model, source, "source.pt", ["a", "b", "c"], member)
        assert all(torch.equal(value, source["model"][f"members.{member % 2}.{name}"])
                   for name, value in model.state_dict().items())


def test_evaluate_command_scores_a_root_and_writes_reports(audio_root, tmp_path):
    run_dir = train(TrainConfig(root=str(audio_root), model="mini", epochs=1, segment_seconds=0.5,
                                out=str(tmp_path / "run")))
    result = subprocess.run([sys.executable, "-m", "vitaudio.evaluate", str(run_dir / "best.pt"), str(audio_root),
                             "--split-file", str(run_dir / "split.json"), "--out", str(tmp_path / "eval")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval/test_report.json").read_text())
    assert report.pop("checkpoint") == str(run_dir / "best.pt") and report.pop("root") == str(audio_root)
    assert report == {k: v for k, v in json.loads((run_dir / "test_report.json").read_text()).items()
                      if k != "best_epoch"}
    assert (tmp_path / "eval/confusion_matrix.png").exists() and (tmp_path / "eval/test_predictions.csv").exists()
    all_clips = evaluate_checkpoint(run_dir / "best.pt", audio_root, out=tmp_path / "all")
    assert all_clips["n_clips"] == 30


def test_evaluate_refuses_classes_the_checkpoint_does_not_know(audio_root, tmp_path):
    run_dir = train(TrainConfig(root=str(audio_root), model="mini", epochs=1, segment_seconds=0.5,
                                out=str(tmp_path / "run")))
    other = write_separable_set(tmp_path / "other", per_class=2, seconds=1.0)
    (other / "bass").rename(other / "polka")
    result = subprocess.run([sys.executable, "-m", "vitaudio.evaluate", str(run_dir / "best.pt"), str(other)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "polka" in result.stderr
