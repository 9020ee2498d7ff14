"""`--log tensorboard`: every model a run trains writes its epochs as TensorBoard event files in its own folder."""
import re
import sys
from pathlib import Path

import pytest
from conftest import write_mixtures, write_separable_set

from vitaudio.config import TrainConfig, config_of_run, parse_args
from vitaudio.errors import ConfigError
from vitaudio.rundir import read_metrics
from vitaudio.tensorboard_log import CONFUSION_TAG, SCALAR_TAGS
from vitaudio.train import train


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*"))


def read_events(folder: Path):
    """The events of `folder`'s own event files (not its subfolders'), every image kept."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def assert_events_match_metrics(folder: Path) -> None:
    """Every scalar tag holds metrics.jsonl's value of each epoch, and each epoch has its confusion matrix."""
    events, metrics = read_events(folder), read_metrics(folder)
    epochs = [record["epoch"] for record in metrics]
    assert set(events.Tags()["scalars"]) == set(SCALAR_TAGS.values())
    for field, tag in SCALAR_TAGS.items():
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == epochs, tag
        assert [s.value for s in scalars] == pytest.approx([r[field] for r in metrics], rel=1e-6), tag
    images = events.Images(CONFUSION_TAG)
    assert [image.step for image in images] == epochs
    assert all(image.width > 100 and image.height > 100 for image in images)


def test_each_member_logs_its_epochs_scalars_and_confusion_matrix_in_its_own_folder(tmp_path):
    pytest.importorskip("tensorboard")
    root = write_separable_set(tmp_path / "audio", per_class=10)
    run_dir = train(TrainConfig(root=str(root), epochs=2, members=2, segment_seconds=1.0, log="tensorboard",
                                out=str(tmp_path / "run")))
    assert not list(run_dir.glob("events.out.tfevents.*"))  # the ensemble's own folder: it trains nothing itself
    for member in (0, 1):
        member_dir = run_dir / f"member{member}"
        assert len(event_files(member_dir)) == 1
        assert [record["epoch"] for record in read_metrics(member_dir)] == [1, 2]
        assert_events_match_metrics(member_dir)


def test_a_resumed_run_goes_on_logging_from_its_next_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    root = write_separable_set(tmp_path / "audio", per_class=10)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=1, segment_seconds=1.0, log="tensorboard",
                                out=str(tmp_path / "run")))
    train(config_of_run(run_dir, epochs=2), resume=run_dir)
    assert len(event_files(run_dir)) == 2  # one per process that trained
    assert [record["epoch"] for record in read_metrics(run_dir)] == [1, 2]
    assert_events_match_metrics(run_dir)


def test_without_log_no_event_file_is_written(tmp_path):
    root = write_separable_set(tmp_path / "audio", per_class=10)
    run_dir = train(TrainConfig(root=str(root), epochs=1, members=1, segment_seconds=1.0, out=str(tmp_path / "run")))
    assert (run_dir / "metrics.jsonl").exists() and event_files(run_dir) == []


def test_missing_tensorboard_is_refused_with_the_install_command_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails, as when not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)  # imported afresh, so it fails
    root = write_separable_set(tmp_path / "audio", per_class=4, seconds=0.5)
    with pytest.raises(ConfigError, match=re.escape('--log tensorboard: tensorboard is not installed')) as refused:
        train(TrainConfig(root=str(root), epochs=1, members=1, log="tensorboard", out=str(tmp_path / "run")))
    assert 'pip install "vitaudio[tensorboard]"' in str(refused.value)
    assert 'pip install -e ".[tensorboard]"' in str(refused.value)
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob("audio.mel-*"))  # not even the mels


def test_log_flag_defaults_to_none_and_is_checked():
    assert parse_args([])[0].log == "none"
    assert parse_args(["--log", "tensorboard"])[0].log == "tensorboard"
    with pytest.raises(ConfigError, match="--log csv"):
        TrainConfig(log="csv").check()


def test_a_tagger_logs_its_val_map_and_per_class_ap_in_place_of_the_confusion_matrix(tmp_path):
    pytest.importorskip("tensorboard")
    from vitaudio.tensorboard_log import MAP_TAG, PER_CLASS_AP_TAG

    run_dir = train(TrainConfig(root=str(write_mixtures(tmp_path, n_clips=30)), epochs=2, members=1,
                                log="tensorboard", out=str(tmp_path / "run")))
    events, metrics = read_events(run_dir), read_metrics(run_dir)
    assert [s.value for s in events.Scalars(MAP_TAG)] == pytest.approx([r["val_map"] for r in metrics], rel=1e-6)
    assert [image.step for image in events.Images(PER_CLASS_AP_TAG)] == [1, 2]
    assert CONFUSION_TAG not in events.Tags()["images"]
