"""The commands as a user meets them: `vitaudio COMMAND`, every --help with its defaults, typed errors in the
library and one-line messages with exit status 2 from each command's main()."""
import shutil
import subprocess
import sys

import pytest
from conftest import write_separable_set, write_tone

from vitaudio import cli, demo, evaluate, melify, predict, train
from vitaudio.config import TrainConfig
from vitaudio.errors import ConfigError, RunDirError, VitaudioError
from vitaudio.evaluate import new_eval_dir
from vitaudio.features import MelConfig
from vitaudio.melify import LayoutError, cached_melify
from vitaudio.predict import collect_files, within_limit

COMMAND_MODULES = {"demo": demo, "melify": melify, "train": train, "evaluate": evaluate, "predict": predict}


def test_vitaudio_command_lists_every_stage_and_runs_them(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in cli.COMMANDS)
    assert cli.main(["no-such-command"]) == 2 and "unknown command" in capsys.readouterr().err


def test_console_script_is_installed_and_dispatches():
    result = subprocess.run([sys.executable, "-m", "vitaudio", "melify", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--n-mels" in result.stdout


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_every_help_shows_the_defaults(name, capsys):
    with pytest.raises(SystemExit) as exited:
        COMMAND_MODULES[name].main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "default" in text
    expected = {"melify": ["--n-mels INT mel bands (image height) (default: derived from the audio",
                           "for clips of 3 s or more"],
                "train": ["(default: mini)", "(default: 150", "(default: 32)", "(default: 2)"],
                "predict": ["(default: 5)", "(default: table)"], "demo": ["(default: 40)"],
                "evaluate": ["(default: test)", "eval-<ROOT name>"]}[name]
    assert all(needle in text for needle in expected), text


def test_every_library_error_is_a_vitaudio_error():
    from vitaudio.audio import AudioDecodeError
    from vitaudio.checkpoint import CheckpointError
    from vitaudio.inference import InputError
    from vitaudio.splits import SplitError

    for error in (AudioDecodeError, CheckpointError, InputError, SplitError, LayoutError, ConfigError, RunDirError):
        assert issubclass(error, VitaudioError)


@pytest.mark.parametrize("flag, value", [("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("members", 0),
                                         ("band_crop", 0.5)])
def test_bad_training_options_raise_config_error_before_anything_is_written(tmp_path, flag, value):
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}"):
        train.train(TrainConfig(root=str(tmp_path / "none"), out=str(tmp_path / "run"), **{flag: value}))
    assert not (tmp_path / "run").exists()


def test_train_command_turns_errors_into_one_line_and_exit_status_2(tmp_path, capsys):
    assert train.main(["--root", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error: ") and "missing" in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # a run that failed before training leaves no folder behind
    assert train.main(["--epochs", "0"]) == 2 and "--epochs 0" in capsys.readouterr().err


def test_a_data_set_too_small_to_split_leaves_no_run_folder(tmp_path, capsys):
    root = write_separable_set(tmp_path / "audio", per_class=1, seconds=1.0)
    assert train.main(["--root", str(root), "--out", str(tmp_path / "run"), "--members", "1"]) == 2
    assert "split" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_segment_too_long_for_the_memory_is_refused_before_memory_is_spent(tmp_path, capsys):
    """--segment-seconds 1000 used to allocate 22.7 GB before the kernel killed the run."""
    root = write_separable_set(tmp_path / "audio", per_class=4, seconds=1.0)
    assert train.main(["--root", str(root), "--out", str(tmp_path / "run"), "--segment-seconds", "1000"]) == 2
    err = capsys.readouterr().err
    assert "--segment-seconds 1000" in err and "GB" in err and "use at most --segment-seconds" in err
    assert not (tmp_path / "run").exists()


def test_a_data_set_of_one_class_is_refused_not_scored_perfect(tmp_path, capsys):
    """A one-class data set used to train and report "test accuracy 1.000"."""
    root = write_separable_set(tmp_path / "audio", per_class=12, seconds=1.0)
    for extra in [p for p in root.iterdir() if p.is_dir()][1:]:
        shutil.rmtree(extra)
    assert train.main(["--root", str(root), "--out", str(tmp_path / "run"), "--members", "1"]) == 2
    assert "one class" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_resume_of_a_run_whose_config_is_corrupt_names_the_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/config.json").write_text("{not json")
    (tmp_path / "run/last.pt").write_bytes(b"")
    assert train.main(["--resume", str(tmp_path / "run")]) == 2
    assert "config.json cannot be read" in capsys.readouterr().err


def test_melify_and_evaluate_report_a_bad_source_with_exit_status_2(tmp_path, capsys):
    assert melify.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("melify: error: ")
    assert evaluate.main([str(tmp_path / "none.pt"), str(tmp_path)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err


def test_evaluation_folders_are_numbered_never_overwritten(tmp_path):
    first = new_eval_dir(tmp_path, "songs")
    first.mkdir()
    second = new_eval_dir(tmp_path, "songs")
    second.mkdir()
    assert (first.name, second.name, new_eval_dir(tmp_path, "songs").name) == ("eval-songs", "eval-songs-2",
                                                                              "eval-songs-3")


def test_training_reuses_a_melify_output_the_user_made_next_to_the_audio(tone_tree, tmp_path, capsys):
    assert melify.main([str(tone_tree), str(tmp_path / "src.mel")]) == 0  # parameters derived, as training does
    capsys.readouterr()
    assert cached_melify(tone_tree) == tmp_path / "src.mel"
    assert "reusing" in capsys.readouterr().err
    assert not list(tmp_path.glob("src.mel-*"))  # no second conversion
    assert cached_melify(tone_tree, MelConfig(n_mels=16)).name == f"src.mel-{MelConfig(n_mels=16).fingerprint()}"


def test_predict_lists_a_file_once_when_named_directly_and_inside_a_named_folder(tmp_path):
    clip = write_tone(tmp_path / "songs/a.wav")
    write_tone(tmp_path / "songs/b.wav")
    files, errors = collect_files([clip, tmp_path / "songs", tmp_path / "songs/../songs/a.wav"])
    assert files == [clip, tmp_path / "songs/b.wav"] and not errors


def test_predict_skips_a_file_longer_than_max_seconds_before_decoding_it(tmp_path):
    long_clip = write_tone(tmp_path / "long.wav", seconds=3.0)
    short_clip = write_tone(tmp_path / "short.wav", seconds=1.0)
    kept, errors = within_limit([long_clip, short_clip], max_seconds=2.0)
    assert kept == [short_clip] and errors == [{"path": str(long_clip), "error": errors[0]["error"]}]
    assert "lasts 3 s, more than --max-seconds 2" in errors[0]["error"]
