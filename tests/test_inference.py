"""The inference pipeline: every input kind, top_k, batching, parity with melify and evaluation, any length,
segments, embeddings, and errors that name the file."""
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from vitaudio.audio import AudioDecodeError, resample
from vitaudio.checkpoint import CheckpointError, save_checkpoint
from vitaudio.data import MelClips, Segmented, SegmentRule, Standardize, clip_context, collate_segments, cut_segments
from vitaudio.engine import evaluate
from vitaudio.features import PNG_DB_STEP, MelConfig, band_stats, read_mel_png
from vitaudio.inference import AudioClassifier, InputError, pipeline
from vitaudio.melify import melify
from vitaudio.model import ViT, ViTConfig

SR = 22050
CLASSES = ["high", "low", "mid"]
SEGMENT = SegmentRule(frames=43, hop_frames=43)  # 1 s at 22,050 Hz / hop 512


def make_checkpoint(path: Path, seed: int = 0, clip_context: bool = True, **overrides) -> Path:
    """A train.py-style checkpoint of a small random ViT (with the presets' clip-context token unless told) on the
    default mel features, 1 s segments."""
    torch.manual_seed(seed)
    config = ViTConfig(n_mels=MelConfig().n_mels, n_classes=len(CLASSES), dim=32, depth=2, heads=2,
                       clip_context=clip_context)
    checkpoint = {"model": ViT(config).state_dict(), "model_config": asdict(config),
                  "mel_config": MelConfig().to_dict(), "classes": CLASSES,
                  "normalization": {"mean": -35.0, "std": 18.0}, "segment": SEGMENT.to_dict(), "epoch": 1}
    checkpoint.update(overrides)
    save_checkpoint(path, {k: v for k, v in checkpoint.items() if v is not None})
    return path


def music(seconds: float, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """A few seconds of chords and noise hits that change over time -> (n,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    clip = sum(np.sin(2 * np.pi * f * t) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 1) * t))
               for f in rng.uniform(100, 3000, size=3))
    clip = clip + 0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    return (0.3 * clip).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SR, subtype: str = "FLOAT") -> Path:
    """Write an audio file (format from the extension); FLOAT WAV holds exactly these samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sample_rate, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def clf(checkpoint) -> AudioClassifier:
    return pipeline(checkpoint, device="cpu")


def test_pipeline_is_exported_at_package_level(checkpoint):
    import vitaudio

    assert vitaudio.pipeline is pipeline and vitaudio.AudioClassifier is AudioClassifier
    assert "3 classes" in repr(pipeline(checkpoint))


def test_path_bytes_array_and_dict_inputs_score_the_same(clf, tmp_path):
    samples = music(2.5)
    path = write_wav(tmp_path / "clip.wav", samples)
    expected = clf(samples, top_k=None)
    for same in (str(path), path, path.read_bytes(), {"sampling_rate": SR, "array": samples},
                 {"sampling_rate": SR, "raw": samples}):
        assert clf(same, top_k=None) == expected


def test_dict_input_is_resampled_to_the_model_rate(clf):
    samples_16k = music(2.0, sample_rate=16000)
    resampled = resample(samples_16k, 16000, SR)
    assert np.allclose(clf.logits({"sampling_rate": 16000, "array": samples_16k}), clf.logits(resampled))
    assert not np.allclose(clf.logits(samples_16k), clf.logits(resampled))  # an array is taken to be at 22,050 Hz


def test_result_is_softmax_over_all_classes_sorted_by_score(clf):
    result = clf(music(1.5), top_k=None)
    scores = [p["score"] for p in result]
    assert sorted(p["label"] for p in result) == CLASSES
    assert scores == sorted(scores, reverse=True) and all(isinstance(s, float) for s in scores)
    assert sum(scores) == pytest.approx(1.0, abs=1e-6)
    logits = torch.from_numpy(clf.logits(music(1.5)))
    assert scores[0] == pytest.approx(float(logits.softmax(0).max()), abs=1e-6)


def test_top_k_keeps_the_best_and_is_capped_at_the_number_of_classes(clf):
    everything = clf(music(1.5), top_k=None)
    assert clf(music(1.5), top_k=1) == everything[:1]
    assert clf(music(1.5), top_k=2) == everything[:2]
    assert clf(music(1.5), top_k=50) == everything
    with pytest.raises(ValueError, match="top_k"):
        clf(music(1.5), top_k=0)


def test_a_list_gives_a_list_and_batch_size_does_not_change_scores(clf):
    clips = [music(seconds, seed=i) for i, seconds in enumerate((0.5, 3.2, 1.0, 7.3, 2.0))]
    one_by_one = np.stack([clf.logits(clip) for clip in clips])
    for batch_size in (1, 3, 64):
        assert np.allclose(clf.logits(clips, batch_size=batch_size), one_by_one, atol=1e-5)
    results = clf(clips, top_k=2)
    assert isinstance(results, list) and len(results) == 5 and all(len(r) == 2 for r in results)
    assert clf(clips[:1]) == [clf(clips[0])]


def test_features_and_logits_match_melify_pngs_and_evaluation(clf, checkpoint, tmp_path):
    paths = [write_wav(tmp_path / "audio" / label / f"{label}.00000.wav", music(seconds, seed=i))
             for i, (label, seconds) in enumerate(zip(CLASSES, (2.7, 0.6, 4.1)))]
    melify(tmp_path / "audio", tmp_path / "mel", clf.mel_config, workers=1, progress=False)
    clips = MelClips(tmp_path / "mel")
    pngs = [tmp_path / "mel" / p.parent.name / f"{p.stem}.png" for p in paths]
    for path, png in zip(paths, pngs):  # the same function made both: they differ by PNG rounding only
        assert np.abs(clf.mel_db(path) - read_mel_png(png)).max() <= PNG_DB_STEP / 2 + 1e-4

    loader = DataLoader(Segmented(clips, clf.segment_rule, clf.standardize), batch_size=2,
                        collate_fn=collate_segments)
    evaluation = evaluate(clf.model, loader, device=torch.device("cpu")).clip_logits.numpy()
    by_key = {f"{path.parent.name}/{path.stem}": path for path in paths}
    ordered = [by_key[key] for key in clips.keys]  # the dataset's order
    assert np.abs(clf.logits(ordered) - evaluation).max() < 1e-4  # PNG rounding: <= 0.0012 dB per value

    png_mel = clf.standardize(torch.from_numpy(read_mel_png(pngs[2]).copy())[None])  # (1, M, T)
    segments = cut_segments(png_mel, clf.segment_rule)
    context = clip_context(png_mel, clf.segment_rule).expand(len(segments), -1)
    model_on_png = clf.model(segments, context).mean(0).detach().numpy()
    assert np.abs(clf.logits(paths[2]) - model_on_png).max() < 1e-4
    from_png = clf.prepare_mel(read_mel_png(pngs[2]), "the png")  # melify's mels take the same path as audio
    assert np.abs(clf.logits(from_png) - model_on_png).max() < 1e-5
    assert from_png.n_frames == png_mel.shape[-1] and from_png.duration == pytest.approx(4.1, abs=0.03)
    with pytest.raises(InputError, match=r"the png: expected a dB mel \(n_mels=128"):
        clf.prepare_mel(read_mel_png(pngs[2])[:64], "the png")


def test_every_segment_is_scored_with_the_whole_clips_context(clf):
    clip = music(4.0, seed=3)
    prepared = clf.prepare(clip)
    mel = clf.standardize(torch.from_numpy(clf.mel_db(clip))[None])  # (1, M, T)
    torch.testing.assert_close(prepared.context, band_stats(mel[None])[0])  # the whole clip, not a segment
    contexts = prepared.context.expand(len(prepared.segments), -1)  # (S, 2M)
    with torch.no_grad():
        with_clip = clf.model(prepared.segments, contexts)
        pooled = clf.model.forward_head(clf.model.forward_features(prepared.segments, contexts), pre_logits=True)
        context_token = clf.model.forward_features(prepared.segments, contexts)[:, 0]  # (S, D), O(1) after the norm
        own_context_token = clf.model.forward_features(prepared.segments)[:, 0]
    assert np.abs(clf.logits(clip) - with_clip.mean(0).numpy()).max() < 1e-5
    assert np.abs(clf.embed(clip) - pooled.mean(0).numpy()).max() < 1e-5
    assert (context_token - own_context_token).abs().max() > 0.1  # a segment's own context is another input


def test_clip_shorter_than_a_segment_is_padded_into_one(clf):
    for n_samples in (MelConfig().n_fft, SR // 3):  # one FFT window, the shortest clip scored; a third of a second
        result = clf(music(1.0)[:n_samples], top_k=1, return_segments=True)
        assert len(result["segments"]) == 1
        assert result["segments"][0]["start"] == 0.0
        assert result["segments"][0]["end"] == round(n_samples / SR, 3)
    assert clf.prepare(music(0.3)).segments.shape == (1, 1, 128, SEGMENT.frames)


def test_five_minute_song_is_cut_into_segments_and_their_logits_averaged(clf):
    song = np.tile(music(10.0), 30)  # 300 s
    clip = clf.prepare(song)
    assert clip.starts == SEGMENT.starts(clip.n_frames) and len(clip.starts) == 301  # 300 + the end-aligned one
    with torch.no_grad():
        expected = clf.model(clip.segments, clip.context.expand(301, -1)).mean(0).numpy()  # (S, C) -> (C,)
    assert np.allclose(clf.logits(song, batch_size=64), expected, atol=1e-5)


def test_return_segments_gives_a_timeline_of_segment_predictions(clf):
    clip_samples = music(3.5)
    result = clf(clip_samples, top_k=2, return_segments=True)
    assert result["predictions"] == clf(clip_samples, top_k=2)
    timeline = result["segments"]
    assert [s["start"] for s in timeline] == [0.0, 0.998, 1.997, 2.508]  # hop 43 frames; the last one ends the clip
    assert timeline[-1]["end"] == 3.5 and all(len(s["predictions"]) == 2 for s in timeline)
    with torch.no_grad():
        prepared = clf.prepare(clip_samples)
        segment_logits = clf.model(prepared.segments, prepared.context.expand(len(prepared.segments), -1))
    assert [s["predictions"][0]["label"] for s in timeline] == [CLASSES[i] for i in segment_logits.argmax(1)]


def test_embed_returns_pooled_clip_embeddings_the_head_is_linear_on(clf):
    clips = [music(2.0), music(4.5, seed=1)]
    embeddings = clf.embed(clips)
    assert isinstance(embeddings, np.ndarray) and embeddings.shape == (2, 32) and embeddings.dtype == np.float32
    assert clf.embed(clips[1]).shape == (32,)
    with torch.no_grad():
        logits = clf.model.head.fc(torch.from_numpy(embeddings)).numpy()
    assert np.allclose(logits, clf.logits(clips), atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4), dtype=np.float32), r"expected mono samples .* got shape \(4, 4\)"),
    (np.zeros((2, 3, 5000), dtype=np.float32), "expected mono samples"),
    (np.zeros(5000, dtype=np.float32), "silent"),
    (np.array([0.1, np.nan] * 2000, dtype=np.float32), "NaN"),
    ({"array": np.ones(100)}, "needs 'sampling_rate'"),
    (42, "cannot score a int"),
])
def test_unusable_input_raises_an_input_error_naming_it(clf, bad, message):
    with pytest.raises(InputError, match=f"input 1: .*{message}"):
        clf([music(1.0), bad])


def test_undecodable_bytes_and_files_raise_decode_errors_naming_them(clf, tmp_path):
    with pytest.raises(AudioDecodeError, match=r"input 0 \(bytes\): not a readable audio file"):
        clf(b"not audio at all")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE")
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        clf(tmp_path / "broken.wav")


def test_stream_with_skip_errors_yields_the_error_in_place_and_goes_on(clf):
    good = music(1.5)
    results = list(clf.stream([good, b"junk", good], top_k=1, skip_errors=True))
    assert results[0] == results[2] == clf(good, top_k=1)
    assert isinstance(results[1], AudioDecodeError) and "input 1" in str(results[1])


def test_file_that_is_not_a_checkpoint_is_refused_naming_it(tmp_path):
    (tmp_path / "notes.pt").write_text("hello")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    for name in ("notes.pt", "foreign.pt", "missing.pt"):
        with pytest.raises(CheckpointError, match=name):
            pipeline(tmp_path / name)


def test_truncated_checkpoint_is_refused_naming_it(checkpoint, tmp_path):
    (tmp_path / "cut.pt").write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        pipeline(tmp_path / "cut.pt")


def test_checkpoint_without_a_mel_config_is_refused_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="no_mel.pt: vitaudio checkpoint lacks mel_config"):
        pipeline(make_checkpoint(tmp_path / "no_mel.pt", mel_config=None))
    with pytest.raises(CheckpointError, match="empty_mel.pt: its mel_config lacks .*n_mels"):
        pipeline(make_checkpoint(tmp_path / "empty_mel.pt", mel_config={}))


def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused_naming_it(tmp_path):
    config = asdict(ViTConfig(n_mels=128, n_classes=3, dim=64, depth=2, heads=2))
    with pytest.raises(CheckpointError, match="mismatch.pt: not a usable vitaudio checkpoint"):
        pipeline(make_checkpoint(tmp_path / "mismatch.pt", model_config=config))


def test_checkpoint_holding_pickled_code_is_refused_without_running_it(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    buffer = io.BytesIO()
    torch.save({"format": "vitaudio-checkpoint-1", "model": Exploit(), "classes": CLASSES}, buffer)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        pipeline(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_device_auto_resolves_and_standardize_comes_from_the_checkpoint(clf, checkpoint):
    auto = pipeline(checkpoint, device="auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert clf.standardize == Standardize(mean=-35.0, std=18.0) and clf.segment_rule == SEGMENT
