"""`python -m vitaudio.predict` (table, json, csv; bad files skipped; a tagger's tags) and `python -m vitaudio.export`
(parity, the sidecar's recipe, a tagger's task, pooling and thresholds, errors)."""
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_inference import CLASSES, make_checkpoint, music, write_wav

from vitaudio import export, predict
from vitaudio.audio import load_audio
from vitaudio.checkpoint import CheckpointError, load_checkpoint
from vitaudio.data import cut_segments
from vitaudio.errors import VitaudioError
from vitaudio.features import MelConfig, log_mel
from vitaudio.inference import AudioClassifier, pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture
def audio_tree(tmp_path) -> Path:
    """tmp/songs/{a.wav, nested/b.flac, nested/.hidden.wav, broken.wav, notes.txt}."""
    songs = tmp_path / "songs"
    write_wav(songs / "a.wav", music(2.0))
    write_wav(songs / "nested" / "b.flac", music(3.5, seed=1), subtype="PCM_16")
    write_wav(songs / "nested" / ".hidden.wav", music(1.0))
    (songs / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (songs / "notes.txt").write_text("not audio, not picked up from a folder")
    return songs


def run_predict(capsys, *argv) -> tuple[int, str, str]:
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json_lists_every_file_and_reports_bad_ones(checkpoint, audio_tree, capsys):
    code, out, err = run_predict(capsys, checkpoint, audio_tree, audio_tree / "missing.wav", "--format", "json",
                                 "--top-k", "2")
    assert code == 0
    records = {Path(r["path"]).name: r for r in json.loads(out)}
    assert set(records) == {"a.wav", "b.flac", "broken.wav", "missing.wav"}
    assert "not a readable audio file" in records["broken.wav"]["error"]
    assert records["missing.wav"]["error"] == "no such file or folder"
    clf = pipeline(checkpoint, device="cpu")
    alone = clf(audio_tree / "a.wav", top_k=2)  # scored alone, not batched with b.flac: equal up to float rounding
    assert [p["label"] for p in records["a.wav"]["predictions"]] == [p["label"] for p in alone]
    assert [p["score"] for p in records["a.wav"]["predictions"]] == pytest.approx([p["score"] for p in alone], abs=1e-6)
    assert [set(p) for p in records["b.flac"]["predictions"]] == [{"label", "score"}] * 2
    assert f"skipped {audio_tree / 'broken.wav'}" in err and "classified 2 of 4 files" in err


def test_predict_csv_has_one_row_per_file_and_rank(checkpoint, audio_tree, capsys):
    code, out, _ = run_predict(capsys, checkpoint, audio_tree / "a.wav", audio_tree / "nested", "--format", "csv",
                               "--top-k", "10")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == ["path", "rank", "label", "score"]
    assert len(rows) == 2 * len(CLASSES)  # top-k capped at the 3 classes; the hidden file is skipped
    assert [r["rank"] for r in rows] == ["1", "2", "3"] * 2
    assert {r["label"] for r in rows} == set(CLASSES) and rows[3]["path"].endswith("b.flac")
    scores = [float(r["score"]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-5)


def test_predict_table_on_stdout_with_a_progress_bar_on_stderr(checkpoint, audio_tree, capsys):
    code, out, err = run_predict(capsys, checkpoint, audio_tree, "--top-k", "1")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("path") and len(lines) == 4
    assert lines[0].endswith("predictions (softmax score)") and "*" not in out
    assert any(line.startswith(str(audio_tree / "a.wav")) and line.split()[-2] in CLASSES for line in lines)
    assert any("broken.wav" in line and "error: not a readable audio file" in line for line in lines)
    assert "predict: 100%" in err and "3/3" in err


def test_predict_runs_as_a_module(checkpoint, audio_tree):
    result = subprocess.run([sys.executable, "-m", "vitaudio.predict", str(checkpoint), str(audio_tree / "a.wav"),
                             "--format", "json"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)[0]["predictions"][0]["label"] in CLASSES


def test_predict_with_a_bad_checkpoint_or_no_good_file_fails_clearly(checkpoint, audio_tree, tmp_path, capsys):
    (tmp_path / "fake.pt").write_bytes(b"nope")
    code, out, err = run_predict(capsys, tmp_path / "fake.pt", audio_tree)
    assert code == 2 and out == "" and "fake.pt" in err
    code, _, err = run_predict(capsys, checkpoint, audio_tree / "broken.wav")
    assert code == 1 and "broken.wav" in err


@pytest.fixture(scope="module")
def tagger_clips(tiny_tagger) -> list[Path]:
    """Four of tiny_tagger's clips."""
    return sorted((tiny_tagger.parent / "audio").glob("*.wav"))[:4]


@pytest.fixture(scope="module")
def tagger_results(tiny_tagger, tagger_clips) -> list[list[dict]]:
    """What the tagger's pipeline gives each of tagger_clips at top_k 1: every tagged label and the top one."""
    return pipeline(tiny_tagger / "best.pt", device="cpu")(tagger_clips, top_k=1)


def test_predict_table_of_a_tagger_marks_every_tagged_label_with_a_star(tiny_tagger, tagger_clips, tagger_results,
                                                                       capsys):
    code, out, _ = run_predict(capsys, tiny_tagger / "best.pt", *tagger_clips, "--top-k", "1")
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("predictions (sigmoid score, * = tagged)") and len(lines) == 5
    assert any(p["tagged"] for result in tagger_results for p in result)  # the check below has tags to find
    for line, path, result in zip(lines[1:], tagger_clips, tagger_results):
        shown = line.removeprefix(str(path)).split()  # label, score, label, score, ...
        assert shown[::2] == [p["label"] + ("*" if p["tagged"] else "") for p in result]
        assert [float(score) for score in shown[1::2]] == pytest.approx([p["score"] for p in result], abs=1e-3)


def test_predict_json_and_csv_of_a_tagger_keep_whether_each_label_is_tagged(tiny_tagger, tagger_clips,
                                                                           tagger_results, capsys):
    code, out, _ = run_predict(capsys, tiny_tagger / "best.pt", *tagger_clips, "--top-k", "1", "--format", "json")
    records = json.loads(out)
    assert code == 0 and [r["path"] for r in records] == [str(path) for path in tagger_clips]
    for record, result in zip(records, tagger_results):
        assert [(p["label"], p["tagged"]) for p in record["predictions"]] == [(p["label"], p["tagged"]) for p in result]
    code, out, _ = run_predict(capsys, tiny_tagger / "best.pt", *tagger_clips, "--top-k", "1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and list(rows[0]) == ["path", "rank", "label", "score", "tagged"]
    expected = [(str(path), p["label"], str(int(p["tagged"]))) for path, result in zip(tagger_clips, tagger_results)
                for p in result]
    assert [(r["path"], r["label"], r["tagged"]) for r in rows] == expected


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_export_prints_parity_and_writes_the_model_and_its_sidecar(checkpoint, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    out = tmp_path / f"model{export.FORMATS[fmt]}"
    assert export.main([str(checkpoint), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("max |Δlogit|") == 3 and "(2, 1, 128, 43)" in printed and "(1, 1, 128, 99)" in printed
    assert "parity check passed" in printed
    sidecar = json.loads(export.sidecar_path(out).read_text())
    assert sidecar["classes"] == CLASSES and sidecar["segment"] == {"frames": 43, "hop_frames": 43}
    assert sidecar["mel_config"]["n_mels"] == 128 and sidecar["normalization"]["mean"] == -35.0
    assert all(check["max_abs_logit_diff"] < 1e-4 for check in sidecar["parity"]["checks"])

    assert sidecar["inputs"] == ["mel_db", "context_db"] and sidecar["context_input"]["shape"] == ["batch", 256]
    assert sidecar["task"] == "single_label" and sidecar["pooling"] == "mean" and sidecar["thresholds"] is None

    clf = pipeline(checkpoint, device="cpu")
    run = _onnx_runner(out) if fmt == "onnx" else _export_runner(out)
    song = music(7.3)  # the sidecar's recipe: log-mel dB, its band stats, segments, mean of their logits
    mel_db = torch.from_numpy(clf.mel_db(song))[None]  # (1, 128, 315)
    segments = cut_segments(mel_db, clf.segment_rule).numpy()  # (S, 1, 128, 43)
    context_db = torch.cat([mel_db.mean(-1), mel_db.std(-1, unbiased=False)], 1).numpy()  # (1, 256)
    assert np.abs(run(segments, context_db.repeat(len(segments), 0)).mean(0) - clf.logits(song)).max() < 1e-4
    whole = mel_db[None].numpy()  # (1, 1, 128, 315): one input of any length
    module = export.MelClassifier(clf.model, clf.standardize).eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(whole), torch.from_numpy(context_db)).numpy()
    assert np.abs(run(whole, context_db) - expected).max() < 1e-4


def test_export_sidecar_states_the_whole_recipe_in_numbers_and_words(checkpoint, tmp_path):
    sidecar = export.export(checkpoint, tmp_path / "model.pt2", "torch-export")
    recipe = sidecar["recipe"]
    assert list(recipe) == ["audio", "log_mel", "short_clip", "context_db", "segments", "clip_score"]
    assert recipe["audio"]["sample_rate"] == 22050 and recipe["audio"]["min_samples"] == 2048
    assert recipe["log_mel"]["mel_config"] == MelConfig().to_dict() and recipe["log_mel"]["floor_db"] == -80.0
    assert recipe["short_clip"]["pad_to_frames"] == 43 and recipe["short_clip"]["pad_value"] == "min_db_of_clip"
    assert recipe["segments"]["frames"] == 43 and recipe["segments"]["last_aligned_to_end"] is True
    assert recipe["context_db"]["shape"] == ["batch", 256]
    assert all(step is None or step["words"] for step in recipe.values())
    assert "aligned to the clip's end" in recipe["segments"]["words"]
    assert "minimum dB value" in recipe["short_clip"]["words"]
    assert "population std" in recipe["context_db"]["words"] and "softmax" in recipe["clip_score"]["words"]


@pytest.fixture(scope="module")
def trained_onnx(tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    """tiny_run's trained checkpoint and its ONNX export (whose sidecar lies next to it)."""
    pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export.export(tiny_run / "best.pt", out, "onnx")
    return tiny_run / "best.pt", out


def scores_from_sidecar(samples: np.ndarray, sidecar: dict, model_file: Path) -> np.ndarray:
    """Clip scores (n_classes,) of mono samples at the sidecar's rate, following its recipe alone: numpy, log_mel
    and onnxruntime; a tagger's (sidecar "task" multi_label) are the sigmoids of its pooled logits."""
    import onnxruntime

    recipe = sidecar["recipe"]
    samples = np.pad(samples, (0, max(0, recipe["audio"]["min_samples"] - len(samples))))  # zeros at the end
    mel_db = log_mel(samples, MelConfig(**recipe["log_mel"]["mel_config"]))  # (M, T)
    missing = recipe["short_clip"]["pad_to_frames"] - mel_db.shape[1]
    if missing > 0:
        mel_db = np.pad(mel_db, ((0, 0), (0, missing)), constant_values=mel_db.min())  # (M, T) -> (M, frames)
    n_frames, frames, hop = mel_db.shape[1], recipe["segments"]["frames"], recipe["segments"]["hop_frames"]
    starts = list(range(0, n_frames - frames + 1, hop))
    if starts[-1] + frames < n_frames:
        starts.append(n_frames - frames)
    inputs = {"mel_db": np.stack([mel_db[None, :, start:start + frames] for start in starts])}  # (S, 1, M, frames)
    if recipe["context_db"] is not None:
        context_db = np.concatenate([mel_db.mean(axis=1), mel_db.std(axis=1)])  # (2M,), population std
        inputs["context_db"] = np.tile(context_db, (len(starts), 1))  # (2M,) -> (S, 2M)
    session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {name: array.astype(np.float32) for name, array in inputs.items()})[0]
    clip_logits = logits.max(axis=0) if sidecar["pooling"] == "max" else logits.mean(axis=0)  # (S, K) -> (K,)
    if sidecar["task"] == "multi_label":
        return 1 / (1 + np.exp(-clip_logits))
    exp = np.exp(clip_logits - clip_logits.max())
    return exp / exp.sum()


@pytest.mark.parametrize("seconds", [2.3, 0.6], ids=["tail-not-on-the-hop", "shorter-than-a-segment"])
def test_export_sidecar_alone_rebuilds_the_pipelines_clip_scores(trained_onnx, seconds):
    checkpoint, model_file = trained_onnx
    sidecar = json.loads(export.sidecar_path(model_file).read_text())
    samples = music(seconds, sample_rate=sidecar["recipe"]["audio"]["sample_rate"], seed=3)
    frames, hop = sidecar["recipe"]["segments"]["frames"], sidecar["recipe"]["segments"]["hop_frames"]
    n_frames = 1 + len(samples) // sidecar["recipe"]["log_mel"]["mel_config"]["hop_length"]
    if seconds > 1:  # the case the end-aligned segment exists for
        assert n_frames > frames and (n_frames - frames) % hop != 0
    else:
        assert n_frames < frames
    expected = {p["label"]: p["score"] for p in pipeline(checkpoint, device="cpu")(samples, top_k=None)}
    scores = scores_from_sidecar(samples, sidecar, model_file)
    assert np.abs(scores - [expected[label] for label in sidecar["classes"]]).max() < 1e-4


def test_export_sidecar_of_a_tagger_holds_its_task_pooling_and_thresholds(tiny_tagger, tmp_path, capsys):
    out = tmp_path / "tagger.pt2"
    assert export.main([str(tiny_tagger / "best.pt"), "--format", "torch-export", "--out", str(out)]) == 0
    assert "a tagger" in capsys.readouterr().out
    sidecar = json.loads(export.sidecar_path(out).read_text())
    checkpoint = load_checkpoint(tiny_tagger / "best.pt")
    assert sidecar["task"] == "multi_label" and sidecar["pooling"] == checkpoint["pooling"]
    assert sidecar["thresholds"] == checkpoint["thresholds"] and len(sidecar["thresholds"]) == 3
    clip_score = sidecar["recipe"]["clip_score"]
    assert clip_score["thresholds"] == checkpoint["thresholds"] and clip_score["tagged"] == "score >= thresholds[class]"
    assert "sigmoid" in clip_score["words"] and f"the {checkpoint['pooling']} of its segments' logits" in \
        clip_score["words"]


@pytest.fixture(scope="module")
def tagger_onnx(tiny_tagger, tmp_path_factory) -> Path:
    """tiny_tagger's ONNX export (its sidecar lies next to it)."""
    pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    out = tmp_path_factory.mktemp("tagger_onnx") / "tagger.onnx"
    export.export(tiny_tagger / "best.pt", out, "onnx")
    return out


def test_export_sidecar_alone_gives_a_taggers_scores_and_tags(tiny_tagger, tagger_onnx, tagger_clips):
    sidecar = json.loads(export.sidecar_path(tagger_onnx).read_text())
    clf = pipeline(tiny_tagger / "best.pt", device="cpu")
    for path in tagger_clips:
        samples = load_audio(path, sidecar["recipe"]["audio"]["sample_rate"])
        scores = scores_from_sidecar(samples, sidecar, tagger_onnx)
        expected = {p["label"]: p for p in clf(path, top_k=None)}
        assert np.abs(scores - [expected[label]["score"] for label in sidecar["classes"]]).max() < 1e-4
        for label, score, threshold in zip(sidecar["classes"], scores, sidecar["thresholds"]):
            if abs(score - threshold) > 1e-4:  # a score this close to its threshold may round either way
                assert (score >= threshold) == expected[label]["tagged"], (path.name, label)


def test_safetensors_export_of_a_tagger_keeps_its_task_pooling_thresholds_and_tags(tiny_tagger, tagger_clips,
                                                                                  tmp_path, capsys):
    model_dir = tmp_path / "tagger"
    assert export.main([str(tiny_tagger / "best.pt"), "--format", "safetensors", "--out", str(model_dir)]) == 0
    assert "3 tags (a multi-label tagger)" in capsys.readouterr().out
    config = json.loads((model_dir / "config.json").read_text())
    checkpoint = load_checkpoint(tiny_tagger / "best.pt")
    assert config["task"] == "multi_label"
    assert {key: config[key] for key in ("pooling", "thresholds")} == \
        {key: checkpoint[key] for key in ("pooling", "thresholds")}
    loaded = AudioClassifier.from_pretrained(model_dir, device="cpu")
    assert loaded.multi_label and loaded.pooling == checkpoint["pooling"]
    assert loaded(tagger_clips, top_k=None) == pipeline(tiny_tagger / "best.pt", device="cpu")(tagger_clips, top_k=None)


def test_export_of_a_model_without_clip_context_takes_the_mel_alone(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "plain.pt", clip_context=False)
    out = tmp_path / "plain.pt2"
    assert export.main([str(checkpoint), "--format", "torch-export", "--out", str(out)]) == 0
    sidecar = json.loads(export.sidecar_path(out).read_text())
    assert sidecar["inputs"] == ["mel_db"] and sidecar["context_input"] is None
    assert sidecar["recipe"]["context_db"] is None
    song = music(3.0)
    clf = pipeline(checkpoint, device="cpu")
    segments = cut_segments(torch.from_numpy(clf.mel_db(song))[None], clf.segment_rule).numpy()
    assert np.abs(_export_runner(out)(segments).mean(0) - clf.logits(song)).max() < 1e-4


def _onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda mel, context: session.run(None, {"mel_db": mel, "context_db": context})[0]


def _export_runner(path: Path):
    module = torch.export.load(str(path)).module()
    return lambda *inputs: module(*map(torch.from_numpy, inputs)).detach().numpy()


EXTRA_MESSAGE = ('the onnx format needs the export extra: pip install "vitaudio[export]" '
                 '(in a clone of vitaudio: pip install -e ".[export]")')


@pytest.fixture
def without_onnx(monkeypatch):
    """`import onnx` raises ImportError, as where the export extra is not installed."""
    monkeypatch.setitem(sys.modules, "onnx", None)


def test_export_to_onnx_without_the_extra_raises_export_error_with_the_install_command(checkpoint, tmp_path,
                                                                                       without_onnx):
    with pytest.raises(export.ExportError, match=re.escape(EXTRA_MESSAGE)) as raised:
        export.export(checkpoint, tmp_path / "model.onnx", "onnx")
    assert str(raised.value) == EXTRA_MESSAGE and isinstance(raised.value.__cause__, ImportError)
    assert isinstance(raised.value, VitaudioError)
    assert list(tmp_path.iterdir()) == []


def test_export_main_without_the_extra_says_how_to_install_it_and_exits_2(checkpoint, tmp_path, capsys,
                                                                          without_onnx):
    assert export.main([str(checkpoint), "--format", "onnx", "--out", str(tmp_path / "model.onnx")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"export: error: {EXTRA_MESSAGE}\n"


def test_export_of_a_file_that_is_not_a_checkpoint_raises_checkpoint_error_naming_it(tmp_path):
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        export.export(tmp_path / "junk.pt", tmp_path / "junk.pt2", "torch-export")


def test_export_main_of_a_file_that_is_not_a_checkpoint_fails_in_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("junk")
    assert export.main([str(tmp_path / "junk.pt"), "--format", "torch-export"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("export: error: ") and "junk.pt" in err and err.count("\n") == 1


def test_export_main_turns_a_runtime_error_into_one_line_and_exit_2(checkpoint, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("tracing failed:\n  at some node\n  see above")

    monkeypatch.setattr(export, "export_program", fail)
    assert export.main([str(checkpoint), "--format", "torch-export", "--out", str(tmp_path / "m.pt2")]) == 2
    assert capsys.readouterr().err == "export: error: tracing failed: at some node see above\n"


def test_export_main_turns_any_vitaudio_error_into_one_line_and_exit_2(checkpoint, tmp_path, capsys, monkeypatch):
    class OtherError(VitaudioError):
        pass

    def fail(*args, **kwargs):
        raise OtherError("some.file: bad\nfix it so")

    monkeypatch.setattr(export.AudioClassifier, "from_checkpoint", fail)
    assert export.main([str(checkpoint), "--format", "torch-export", "--out", str(tmp_path / "m.pt2")]) == 2
    assert capsys.readouterr().err == "export: error: some.file: bad fix it so\n"


def test_export_help_shows_every_default(capsys):
    parser = export.build_parser()
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert options and all("(default: " in action.help for action in options)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    assert "(default: onnx)" in shown and "(default: the checkpoint's path with .onnx or .pt2)" in shown
