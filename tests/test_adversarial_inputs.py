"""Inputs a first-time or hostile user gives melify, `pipeline` and `predict`: wrapped, empty or unwritable folders,
a full disk, overflowing samples, stereo arrays in either layout, clips too short to see, missing and empty files,
arguments in the wrong order. Each gets a message naming the path and the fix, never a traceback or a NaN."""
import errno
import json
import os
import pathlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SR, write_tone
from test_inference import make_checkpoint, music, write_wav

from vitaudio import melify as melify_module
from vitaudio import predict
from vitaudio.audio import AudioDecodeError, load_audio, too_short
from vitaudio.checkpoint import CheckpointError, save_checkpoint
from vitaudio.features import MelConfig, read_mel_png
from vitaudio.inference import InputError, pipeline
from vitaudio.melify import LayoutError, find_class_root, melify

HUGE = 3e38  # finite in float32 (max ~3.4e38), but its square is not


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def clf(checkpoint):
    return pipeline(checkpoint, device="cpu")


def huge_wav(path: Path, seconds: float = 1.0) -> Path:
    """A float WAV whose samples alternate between +-3e38: finite, yet every power spectrum of it overflows."""
    samples = np.full(int(seconds * SR), HUGE, dtype=np.float32)
    samples[1::2] *= -1
    return write_wav(path, samples)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def run_melify(capsys, *argv) -> tuple[int, str, str]:
    code = melify_module.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- melify: where the classes are -------------------------------------------------------------------------------

def test_melify_steps_through_three_wrapper_folders_above_the_classes(tmp_path, capsys):
    """Three wrapper folders above the classes used to become one class named after the first wrapper."""
    for label in ("a", "b"):
        write_tone(tmp_path / f"root/w1/w2/w3/{label}/{label}.0.wav")
    assert find_class_root(tmp_path / "root") == tmp_path / "root/w1/w2/w3"
    report = melify(tmp_path / "root", tmp_path / "dst", workers=1, progress=False)
    assert report.n_ok == 2 and sorted(png.parent.name for png in (tmp_path / "dst").rglob("*.png")) == ["a", "b"]
    assert f"melify: the class folders are in {tmp_path / 'root/w1/w2/w3'}" in capsys.readouterr().err


def test_wrapper_folders_above_classes_whose_clips_sit_deeper_are_stepped_through_too(tmp_path):
    for label in ("a", "b"):
        write_tone(tmp_path / f"root/w1/w2/{label}/2024/{label}.0.wav")
    assert find_class_root(tmp_path / "root") == tmp_path / "root/w1/w2"


def test_a_folder_holding_clips_of_its_own_is_no_wrapper(tmp_path):
    write_tone(tmp_path / "root/loose.wav")
    write_tone(tmp_path / "root/only/x/x.0.wav")
    assert find_class_root(tmp_path / "root") == tmp_path / "root"


def test_a_wrapper_linking_back_to_itself_ends_in_a_layout_error_not_a_loop(tmp_path):
    (tmp_path / "root/w").mkdir(parents=True)
    (tmp_path / "root/w/again").symlink_to(tmp_path / "root/w", target_is_directory=True)
    with pytest.raises(LayoutError, match="one folder per class"):
        find_class_root(tmp_path / "root")


def test_melify_warns_that_an_empty_class_folder_holds_no_audio_and_leaves_it_out(tone_tree, tmp_path, capsys):
    (tone_tree / "quiet").mkdir()
    (tone_tree / "notes").mkdir()
    (tone_tree / "notes/readme.txt").write_text("no audio here")
    report = melify(tone_tree, tmp_path / "dst", workers=1, progress=False)
    err = capsys.readouterr().err
    assert report.n_ok == 4
    for name in ("quiet", "notes"):
        assert f"melify: class folder {tone_tree / name} holds no audio: left out" in err
        assert not (tmp_path / "dst" / name).exists()


# --- melify: a DST that cannot be written --------------------------------------------------------------------------

@pytest.fixture
def manifest_write_fails(monkeypatch):
    """Make the n-th write of melify.json (through its temporary file) fail with the given errno, half written.
    The PNGs are written with write_bytes, so they are unaffected."""
    real_write_text = pathlib.Path.write_text

    def arm(error_number: int, on_call: int):
        calls = []

        def write_text(self, text, *args, **kwargs):
            if self.name.startswith(f".{melify_module.MANIFEST}"):
                calls.append(self)
                if len(calls) == on_call:
                    real_write_text(self, text[:len(text) // 2], *args, **kwargs)  # what fitted before the error
                    raise OSError(error_number, os.strerror(error_number), str(self))
            return real_write_text(self, text, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)

    return arm


def test_disk_full_while_writing_melify_json_is_one_clear_error_and_leaves_no_temporary_file(
        tone_tree, tmp_path, manifest_write_fails):
    """A full disk at the final write of melify.json used to end in a traceback."""
    dst = tmp_path / "dst"
    manifest_write_fails(errno.ENOSPC, on_call=2)  # the first write claims DST, the second ends the run
    with pytest.raises(LayoutError) as raised:
        melify(tone_tree, dst, workers=1, progress=False)
    message = str(raised.value)
    assert message.startswith(f"cannot write {dst / 'melify.json'}: the disk is full") and "run melify again" in message
    assert not list(dst.rglob("*.tmp"))
    pngs = sorted(dst.rglob("*.png"))
    assert len(pngs) == 4 and all(read_mel_png(png).shape[1] > 0 for png in pngs)  # the images stay intact


@pytest.mark.parametrize("error_number, fix", [(errno.ENOSPC, "the disk is full"),
                                                (errno.EACCES, "make DST writable")])
def test_melify_command_reports_an_unwritable_manifest_in_one_line_with_exit_status_2(
        tone_tree, tmp_path, capsys, manifest_write_fails, error_number, fix):
    manifest_write_fails(error_number, on_call=1)
    code, out, err = run_melify(capsys, tone_tree, tmp_path / "dst")
    assert code == 2 and out == ""
    assert err.startswith(f"melify: error: cannot write {tmp_path / 'dst/melify.json'}: ") and fix in err
    assert err.count("\n") == 1 and not list((tmp_path / "dst").rglob("*.tmp"))


def test_melify_into_a_dst_that_is_a_file_says_so_in_one_line(tone_tree, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(LayoutError, match=re.escape(f"{tmp_path / 'taken'} is a file, not a folder: ")):
        melify(tone_tree, tmp_path / "taken", workers=1, progress=False)
    code, out, err = run_melify(capsys, tone_tree, tmp_path / "taken")
    assert code == 2 and out == "" and err.count("\n") == 1 and "is a file, not a folder" in err
    code, _, err = run_melify(capsys, tone_tree, tmp_path / "taken/below")
    assert code == 2 and err.startswith(f"melify: error: cannot write {tmp_path / 'taken/below'}: ")
    assert err.count("\n") == 1 and (tmp_path / "taken").read_text() == "a file"


def test_melify_into_a_read_only_dst_says_how_to_fix_it_in_one_line(tone_tree, tmp_path, capsys):
    dst = tmp_path / "read_only"
    dst.mkdir()
    dst.chmod(0o500)
    try:
        if os.access(dst, os.W_OK):
            pytest.skip("this user may write into a read-only folder (root)")
        with pytest.raises(LayoutError, match="make DST writable"):
            melify(tone_tree, dst, workers=1, progress=False)
        code, out, err = run_melify(capsys, tone_tree, dst)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"melify: error: cannot write {dst / 'melify.json'}: ") and "make DST writable" in err
    finally:
        dst.chmod(0o700)


# --- samples that overflow -----------------------------------------------------------------------------------------

def test_pipeline_refuses_huge_finite_float_samples_naming_the_file_instead_of_scoring_nan(clf, tmp_path):
    path = huge_wav(tmp_path / "huge.wav")
    for item, name in ((path, "huge.wav"), (load_audio(path, SR), "input 0")):
        with pytest.raises(InputError, match=rf"{name}: its samples overflow: they reach 3e\+38.*normalise it to \[-1"):
            clf(item)


def test_predict_json_stays_strict_json_when_a_file_overflows(checkpoint, tmp_path, capsys):
    good, huge = write_wav(tmp_path / "good.wav", music(1.5)), huge_wav(tmp_path / "huge.wav")
    assert predict.main([str(checkpoint), str(good), str(huge), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    records = {Path(r["path"]).name: r for r in strict_json(out)}
    assert "its samples overflow" in records["huge.wav"]["error"] and len(records["good.wav"]["predictions"]) == 3
    assert f"skipped {huge}: its samples overflow" in err


def test_melify_reports_overflowing_samples_as_failed_instead_of_writing_a_flat_image(tone_tree, tmp_path):
    huge_wav(tone_tree / "low/huge.wav", seconds=2.0)
    report = melify(tone_tree, tmp_path / "dst", workers=1, progress=False)
    record = next(r for r in report.records if r["source"] == "low/huge.wav")
    assert record["status"] == "failed" and "its samples overflow" in record["error"]
    assert not (tmp_path / "dst/low/huge.png").exists() and report.n_ok == 4


def test_non_finite_model_outputs_raise_an_input_error_naming_the_input(checkpoint, tmp_path, capsys):
    broken = torch.load(checkpoint, weights_only=True)
    broken["model"]["head.fc.bias"].fill_(float("nan"))  # as a diverged training would leave them
    save_checkpoint(tmp_path / "nan.pt", broken)
    nan_clf = pipeline(tmp_path / "nan.pt", device="cpu")
    with pytest.raises(InputError, match="input 0: the model's outputs for it are not finite"):
        nan_clf(music(1.5))
    with pytest.raises(InputError, match="not finite"):
        nan_clf.logits(music(1.5))
    assert isinstance(next(nan_clf.stream([music(1.5)], skip_errors=True)), InputError)
    good = write_wav(tmp_path / "good.wav", music(1.5))
    assert predict.main([str(tmp_path / "nan.pt"), str(good), "--format", "json"]) == 1
    assert "not finite" in strict_json(capsys.readouterr().out)[0]["error"]


# --- stereo arrays ------------------------------------------------------------------------------------------------

def test_stereo_array_in_either_layout_scores_as_its_mono_mean(clf):
    """soundfile's (samples, channels) used to fail with a hint, mean(axis=0), that made a 2-sample clip."""
    left, right = music(2.0, sample_rate=44100), music(2.0, sample_rate=44100, seed=1)
    channels_first = np.stack([left, right])  # (2, S), as torchaudio and librosa give it
    mono = clf.logits({"sampling_rate": 44100, "array": (left + right) / 2})
    for layout in (channels_first, channels_first.T):  # (S, 2), as soundfile gives it
        np.testing.assert_allclose(clf.logits({"sampling_rate": 44100, "array": layout}), mono, atol=1e-5)
    np.testing.assert_allclose(clf.logits(np.stack([left, right, left]).T[:SR]), clf.logits(
        ((2 * left + right) / 3)[:SR]), atol=1e-5)  # a bare array: three channels, model rate


def test_the_old_hint_applied_to_soundfiles_layout_gives_a_clip_too_short_to_score(clf):
    samples_by_channel = np.stack([music(1.0), music(1.0, seed=1)], axis=1)  # (S, 2)
    with pytest.raises(InputError, match="input 0: too short"):
        clf({"sampling_rate": SR, "array": samples_by_channel.mean(axis=0)})  # 2 samples


@pytest.mark.parametrize("shape", [(4, 4), (9, 30000), (30000, 9), (2, 3, 30000)])
def test_array_whose_channel_axis_is_ambiguous_is_refused(clf, shape):
    with pytest.raises(InputError, match=rf"input 0: expected mono samples .*got shape \({shape[0]}, {shape[1]}"):
        clf(np.full(shape, 0.1, dtype=np.float32))


# --- clips too short for one FFT window ---------------------------------------------------------------------------

def test_pipeline_refuses_a_clip_shorter_than_one_fft_window_as_melify_does(clf, tmp_path):
    """A 0.05 s clip used to be scored by the pipeline while melify and training skipped it as too short."""
    short = music(0.05)
    reason = too_short(len(short), MelConfig().n_fft, SR)
    assert reason.startswith("too short: 0.050 s is less than one FFT window (2048 samples")
    with pytest.raises(InputError, match=re.escape(f"input 0: {reason}")):
        clf(short)
    path = write_wav(tmp_path / "audio/go/go.wav", short)
    write_wav(tmp_path / "audio/stop/stop.wav", music(1.0))
    with pytest.raises(InputError, match=re.escape(f"go.wav: {reason}")):
        clf(path)
    report = melify(tmp_path / "audio", tmp_path / "mel", MelConfig(), workers=1, progress=False)
    assert report.records[0]["source"] == "go/go.wav" and report.records[0]["error"] == reason  # the same rule
    assert clf(music(1.0)[:MelConfig().n_fft], top_k=1)  # one whole window is enough


def test_too_short_is_fewer_samples_than_one_fft_window():
    assert too_short(2048, 2048, SR) is None and too_short(10**6, 2048, SR) is None
    assert too_short(2047, 2048, SR) == "too short: 0.093 s is less than one FFT window (2048 samples = 0.093 s)"


def test_predict_skips_a_clip_too_short_to_score_and_says_why(checkpoint, tmp_path, capsys):
    short, good = write_wav(tmp_path / "short.wav", music(0.05)), write_wav(tmp_path / "good.wav", music(1.5))
    assert predict.main([str(checkpoint), str(short), str(good), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    records = strict_json(out)
    assert records[0] == {"path": str(short), "error": too_short(len(music(0.05)), 2048, SR) +
                          "; the model cannot classify it"}
    assert "predictions" in records[1] and f"skipped {short}: too short" in err


# --- files that are not what they should be -----------------------------------------------------------------------

def test_missing_audio_file_is_reported_as_no_such_file(clf, tmp_path):
    """It used to say "not a readable audio file (... System error.)"."""
    with pytest.raises(AudioDecodeError, match=f"^{re.escape(str(tmp_path / 'nonexistent.wav'))}: no such file$"):
        clf(tmp_path / "nonexistent.wav")


def test_empty_audio_file_is_reported_as_empty_not_as_an_unknown_format(clf, tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty.wav: empty file \(0 bytes\)$"):
        clf(tmp_path / "empty.wav")
    with pytest.raises(AudioDecodeError, match=r"^input 0 \(bytes\): empty file \(0 bytes\)$"):
        clf(b"")


def test_a_folder_given_as_an_audio_file_is_reported_as_a_folder(clf, tmp_path):
    with pytest.raises(AudioDecodeError, match="is a folder, not an audio file"):
        clf(tmp_path)


def test_audio_file_given_where_the_checkpoint_goes_says_to_pass_the_checkpoint_first(checkpoint, tmp_path, capsys):
    """pipeline("yes.wav") used to say "truncated or corrupt (pop from empty list)"."""
    audio = write_wav(tmp_path / "yes.wav", music(1.0))
    expected = f"{audio}: is an audio file, not a checkpoint: pass the checkpoint (runs/x/best.pt) first"
    with pytest.raises(CheckpointError) as raised:
        pipeline(audio)
    assert str(raised.value).startswith(expected)
    renamed = tmp_path / "yes.bin"  # recognised by its content too
    renamed.write_bytes(audio.read_bytes())
    with pytest.raises(CheckpointError, match="yes.bin: is an audio file, not a checkpoint"):
        pipeline(renamed)
    assert predict.main([str(audio), str(checkpoint)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"predict: error: {raised.value}\n"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 kB tmpfs, where the machine lets this process mount one (root in a container); skipped elsewhere."""
    import subprocess

    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_melify_onto_a_really_full_disk_reports_each_clip_and_the_manifest_and_leaves_no_partial_file(
        tmp_path, capsys, small_tmpfs):
    """A real full disk (a 64 kB tmpfs), not a simulated one: no traceback and no half-written file."""
    for k in range(6):
        write_tone(tmp_path / "src" / ("low" if k % 2 else "high") / f"{k}.wav", 200.0 * (k + 1), seconds=4.0)
    code, out, err = run_melify(capsys, tmp_path / "src", small_tmpfs / "dst")
    assert "Traceback" not in err and ("no space" in err.lower() or "disk is full" in err), err
    manifest = small_tmpfs / "dst/melify.json"
    if code == 2:  # not even melify.json fits
        assert err.count("\n") and err.rstrip().splitlines()[-1].startswith("melify: error: cannot write")
    else:  # the clips that did not fit are reported failed, and a rerun with space converts them
        failed = [r for r in json.loads(manifest.read_text())["files"] if r["status"] == "failed"]
        assert failed and "failed 0" not in out
    assert not list(small_tmpfs.rglob("*.tmp"))
    assert all(read_mel_png(png).shape[1] > 0 for png in small_tmpfs.rglob("*.png"))  # what was written is whole
