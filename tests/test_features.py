import io

import librosa
import numpy as np
import pytest
from conftest import SR, write_tone
from PIL import Image

from vitaudio.audio import AudioDecodeError, load_audio
from vitaudio.features import (
    PNG_DB_STEP,
    MelConfig,
    log_mel,
    mel_config_for,
    mel_filterbank,
    read_mel_png,
    write_mel_png,
)


def mel_band_of(freq: float, config: MelConfig) -> int:
    """Index of the mel band whose centre is nearest `freq`."""
    centres = librosa.mel_frequencies(config.n_mels + 2, fmin=config.fmin, fmax=config.max_frequency)[1:-1]
    return int(np.argmin(np.abs(centres - freq)))


def test_log_mel_shape_and_range():
    config = MelConfig()
    mel_db = log_mel(np.random.default_rng(0).standard_normal(SR * 3).astype(np.float32), config)
    assert mel_db.shape == (128, config.n_frames(SR * 3)) == (128, 130)
    assert mel_db.dtype == np.float32
    assert mel_db.max() == 0.0 and mel_db.min() >= -80.0


def test_log_mel_matches_librosa_power_to_db():
    config = MelConfig(n_mels=64, fmin=20.0, fmax=8000.0, top_db=60.0)
    samples = np.random.default_rng(1).standard_normal(SR * 2).astype(np.float32)
    expected = librosa.power_to_db(
        librosa.feature.melspectrogram(y=samples, sr=SR, n_fft=2048, hop_length=512, n_mels=64,
                                       fmin=20.0, fmax=8000.0), ref=np.max, top_db=60.0)
    np.testing.assert_allclose(log_mel(samples, config), expected, atol=1e-3)


@pytest.mark.parametrize("config", [MelConfig(), MelConfig(n_mels=64, fmin=20.0, fmax=8000.0),
                                    mel_config_for(16000, 1.0), MelConfig(sample_rate=8000, n_fft=256, n_mels=40,
                                                                          fmin=300.0, fmax=3999.0)])
def test_mel_filterbank_is_librosas(config):
    expected = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels,
                                   fmin=config.fmin, fmax=config.max_frequency)
    np.testing.assert_array_equal(mel_filterbank(config), expected)  # bit for bit: earlier PNGs keep their hashes


def test_the_chunked_cpu_stft_and_the_batched_one_of_gpus_agree():
    import torch

    from vitaudio.features import _mel_power_in_chunks, _mel_power_of_stft

    config = MelConfig()
    clips = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 5 * SR)).astype(np.float32))
    chunked, batched = _mel_power_in_chunks(clips, config), _mel_power_of_stft(clips, config)
    assert chunked.shape == batched.shape == (2, 128, config.n_frames(5 * SR))
    torch.testing.assert_close(chunked, batched, rtol=1e-4, atol=1e-6)


def test_log_mel_accepts_torch_batches():
    import torch

    config = MelConfig(n_mels=32)
    clips = np.random.default_rng(2).standard_normal((3, 3 * SR)).astype(np.float32)  # several chunks of frames
    batch = log_mel(torch.from_numpy(clips), config)  # (3, 32, T)
    assert batch.shape == (3, 32, config.n_frames(3 * SR))
    np.testing.assert_allclose(batch[1].numpy(), log_mel(clips[1], config), atol=1e-4)


def test_pure_tone_lands_in_its_mel_band(tmp_path):
    config = MelConfig()
    for freq in (250.0, 1000.0, 4000.0):
        mel_db = log_mel(load_audio(write_tone(tmp_path / f"{freq}.wav", freq), SR), config)
        assert abs(int(mel_db.mean(axis=1).argmax()) - mel_band_of(freq, config)) <= 1


def test_png_puts_low_frequencies_at_the_bottom(tmp_path):
    mel_db = log_mel(load_audio(write_tone(tmp_path / "low.wav", 100.0), SR), MelConfig())
    write_mel_png(tmp_path / "low.png", mel_db)
    with Image.open(tmp_path / "low.png") as image:
        assert image.mode == "I;16" and image.size == (mel_db.shape[1], 128)  # (width = frames, height = bands)
        pixels = np.asarray(image)
    assert pixels.dtype == np.uint16
    assert pixels.mean(axis=1).argmax() > 128 * 3 // 4  # brightest row is near the bottom of the picture


def test_png_round_trip_within_one_quantisation_step(tmp_path):
    mel_db = np.random.default_rng(3).uniform(-80, 0, size=(128, 300)).astype(np.float32)
    mel_db[0, 0], mel_db[1, 1] = 0.0, -80.0
    write_mel_png(tmp_path / "x.png", mel_db)
    restored = read_mel_png(tmp_path / "x.png")
    assert restored.shape == mel_db.shape
    assert np.abs(restored - mel_db).max() <= PNG_DB_STEP
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed away


def test_stereo_is_averaged_to_mono(tmp_path):
    import soundfile as sf

    left = np.sin(2 * np.pi * 440 * np.arange(SR) / SR) * 0.5
    right = np.zeros(SR)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    samples = load_audio(tmp_path / "stereo.wav", SR)
    assert samples.shape == (SR,) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, left / 2, atol=1e-6)


def test_44k_audio_is_resampled_keeping_pitch(tmp_path):
    config = MelConfig()
    samples = load_audio(write_tone(tmp_path / "hi.flac", 1000.0, seconds=2.0, sample_rate=44100), SR)
    assert abs(len(samples) - 2 * SR) <= 1
    assert abs(int(log_mel(samples, config).mean(axis=1).argmax()) - mel_band_of(1000.0, config)) <= 1


@pytest.mark.parametrize("suffix", [".au", ".ogg", ".mp3"])
def test_other_formats_decode(tmp_path, suffix):
    import soundfile as sf

    t = np.arange(SR) / SR
    sf.write(tmp_path / f"x{suffix}", 0.5 * np.sin(2 * np.pi * 440 * t), SR)
    assert abs(len(load_audio(tmp_path / f"x{suffix}", SR)) - SR) < SR * 0.06  # codecs may pad a frame


def test_audio_bytes_decode(tmp_path):
    path = write_tone(tmp_path / "x.wav")
    np.testing.assert_array_equal(load_audio(path.read_bytes(), SR), load_audio(path, SR))


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file (0 bytes)"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", "not a readable audio file"),
])
def test_corrupt_files_raise_typed_error_with_path(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, SR)
    assert err.value.path == str(path) and reason in err.value.reason


def test_header_only_wav_is_empty(tmp_path):
    path = write_tone(tmp_path / "empty.wav", seconds=0.0)
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(path, SR)


def test_unsupported_container_names_the_fix(tmp_path):
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A junk")
    with pytest.raises(AudioDecodeError, match="ffmpeg -i song.m4a song.wav"):
        load_audio(path, SR)


def test_missing_file_raises_typed_error(tmp_path):
    with pytest.raises(AudioDecodeError):
        load_audio(tmp_path / "nope.wav", SR)


def test_mel_config_rejects_bad_values():
    with pytest.raises(ValueError, match="fmin"):
        MelConfig(fmin=12000.0)
    with pytest.raises(ValueError, match="top_db"):
        MelConfig(top_db=200.0)


def test_mel_config_fingerprint_is_stable_and_parameter_sensitive():
    assert MelConfig().fingerprint() == MelConfig().fingerprint()
    assert MelConfig().fingerprint() != MelConfig(n_mels=64).fingerprint()


def test_png_encoding_is_read_alike_by_pillow_and_torchvision(tmp_path):
    import torch
    from torchvision.io import decode_png

    from vitaudio.features import encode_png16

    image = np.random.default_rng(4).integers(0, 65536, size=(16, 37), dtype=np.uint16)
    data = encode_png16(image)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == "I;16" and np.array_equal(np.asarray(decoded), image)
    from_torchvision = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8))  # (1, H, W) uint16
    assert np.array_equal(from_torchvision[0].numpy().astype(np.uint16), image)


def test_short_clips_get_keyword_spotting_resolution_and_long_clips_the_music_defaults():
    assert mel_config_for(22050, 30.0) == mel_config_for(16000, 3.0) == MelConfig()
    words = mel_config_for(16000, 1.0)
    assert (words.sample_rate, words.n_fft, words.hop_length, words.n_mels) == (16000, 512, 160, 64)
    assert words.n_frames(16000) == 101  # a one-second word: 100 frames of 10 ms
    assert mel_config_for(44100, 1.0).sample_rate == 22050  # never above the music rate
    assert mel_config_for(8000, 0.5).hop_length == 80
    for config in (words, mel_config_for(44100, 1.0), mel_config_for(8000, 0.5)):
        assert (mel_filterbank(config).sum(axis=1) > 0).all(), config  # every band has an FFT bin
