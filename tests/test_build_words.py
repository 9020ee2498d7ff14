"""bench/data/build_words.py: which voices are held out and drawn, how a take is trimmed, placed and mixed, and the
build's files, metadata and resume journal, with espeak-ng replaced by a stand-in; a small real build and
espeak-ng's reading of the foreign spellings run where espeak-ng is installed."""
import csv
import importlib.util
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vitaudio.files import data_fingerprint
from vitaudio.splits import make_split, read_groups

BUILDER = Path(__file__).parents[1] / "bench" / "data" / "build_words.py"
spec = importlib.util.spec_from_file_location("bench_build_words", BUILDER)
build_words = sys.modules["bench_build_words"] = importlib.util.module_from_spec(spec)  # a script, not a package
spec.loader.exec_module(build_words)

voice_split = build_words.voice_split
SR = build_words.SAMPLE_RATE
ALL_GROUPS = [f"{accent}+{variant}" for accent in build_words.ACCENTS for variant in build_words.VARIANTS]
REQUIRED_COLUMNS = {"clip", "class", "group", "voice", "accent", "variant", "pitch", "speed", "gain_db", "offset_s",
                    "snr_db"}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def take(**changes):
    fields = dict(pitch=50, speed=160, gain_db=0.0, snr_db=float("inf"), noise="white", position=0.5, noise_seed=0)
    return build_words.Take(**{**fields, **changes})


@pytest.fixture
def fake_espeak(tmp_path, monkeypatch) -> Counter:
    """espeak-ng replaced by a tone burst between 0.1 s of silence, 0.3 s + 40 ms per letter long at 160 words
    per minute; returns the count of calls per voice."""
    data_dir = tmp_path / "espeak-ng-data"
    (data_dir / "voices" / "!v").mkdir(parents=True)
    for variant in build_words.VARIANTS:
        (data_dir / "voices" / "!v" / variant).touch()
    calls = Counter()

    def speak(text, voice, pitch, speed):
        calls[voice] += 1
        rate = 22050
        n_word = int(rate * (0.3 + 0.04 * len(text)) * 160 / speed)
        t = np.arange(n_word) / rate
        burst = np.sin(2 * np.pi * (100 + 2 * pitch) * t) * np.hanning(n_word) ** 0.1
        silence = np.zeros(int(0.1 * rate))
        return np.concatenate([silence, burst, silence]).astype(np.float32), rate

    monkeypatch.setattr(build_words, "espeak_info", lambda: ("fake", data_dir))
    monkeypatch.setattr(build_words, "speak", speak)
    return calls


def read_metadata(out: Path) -> list[dict]:
    with open(out / "metadata.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


# ------------------------------------------------------------------ held out or development; drawing voices

def test_voice_split_is_the_fixed_sha1_rule():
    # The held-out pool must stay the same voices from build to build: SHA-1 buckets 69, 85, 121, 201, 254 (held
    # out, < 300) and 388, 487, 637, 904, 993 (development).
    held_out = ["en-gb+klatt", "en-gb+f2", "en-gb+Andy", "en-gb-scotland+m3", "pl+Andy"]
    development = ["en-us+f2", "en-gb-scotland+m1", "en-us+m3", "de+f2", "fr+whisper"]
    assert [voice_split(g) for g in held_out] == ["test"] * len(held_out)
    assert [voice_split(g) for g in development] == ["train"] * len(development)


def test_about_70_percent_of_the_possible_voices_are_for_development():
    share = sum(voice_split(g) == "train" for g in ALL_GROUPS) / len(ALL_GROUPS)
    assert 0.65 < share < 0.75


def test_development_and_held_out_draws_are_disjoint_and_stay_in_their_pools():
    n_train = sum(voice_split(g) == "train" for g in ALL_GROUPS)
    development = {v.name for v in build_words.draw_voices(n_train, pool="train")}  # the whole pool
    held_out = {v.name for v in build_words.draw_voices(len(ALL_GROUPS) - n_train, pool="test")}
    assert not development & held_out
    assert development | held_out == set(ALL_GROUPS)
    assert {voice_split(g) for g in development} == {"train"}
    assert {voice_split(g) for g in held_out} == {"test"}


def test_draw_voices_refuses_more_voices_than_the_pool_holds():
    with pytest.raises(build_words.WordsBuildError, match="ask for at most"):
        build_words.draw_voices(len(ALL_GROUPS), pool="test")


def test_draw_voices_is_seeded_and_a_smaller_build_gets_the_first_voices_of_a_larger_one():
    voices = build_words.draw_voices(60, seed=0)
    assert build_words.draw_voices(60, seed=0) == voices
    assert build_words.draw_voices(7, seed=0) == voices[:7]
    assert build_words.draw_voices(60, seed=1) != voices
    assert len({v.name for v in voices}) == 60


def test_draw_voices_spreads_over_every_accent_and_many_variants():
    voices = build_words.draw_voices(60)
    per_accent = Counter(v.accent for v in voices)
    assert set(per_accent) == set(build_words.ACCENTS)
    assert max(per_accent.values()) - min(per_accent.values()) <= 1
    assert max(Counter(v.variant for v in voices).values()) <= 2
    assert all(0 <= v.pitch <= 99 and 100 <= v.speed <= 250 for v in voices)


def test_every_foreign_accent_spells_all_ten_words_and_english_accents_say_them_as_written():
    assert all(len(texts) == len(build_words.WORDS) for texts in build_words.FOREIGN_TEXT.values())
    assert build_words.word_text("en-gb-scotland", "right") == "right"
    assert build_words.word_text("es", "stop") == "estop"


# ------------------------------------------------------------------ a take: trim, place, mix

def test_trim_silence_keeps_a_quiet_consonant_and_drops_the_silence_around_the_word():
    rng = np.random.default_rng(0)
    silence = 1e-5 * rng.standard_normal(int(0.2 * SR))
    consonant = 0.02 * rng.standard_normal(int(0.05 * SR))  # ~ -35 dB below the vowel
    vowel = 0.9 * np.sin(2 * np.pi * 200 * np.arange(int(0.3 * SR)) / SR)
    audio = np.concatenate([silence, consonant, vowel, silence])
    word = build_words.trim_silence(audio, SR)
    spoken = len(consonant) + len(vowel)
    assert spoken <= len(word) <= spoken + int(0.05 * SR)  # whole, with at most a pad and a frame either side
    start = np.flatnonzero(audio == word[0])[0]
    assert start <= len(silence)  # begins before the consonant, not at the vowel


def test_word_offset_keeps_every_word_that_fits_inside_the_window_and_refuses_a_longer_one():
    edge, n_max = round(build_words.EDGE_S * SR), build_words.max_word_samples()
    for n_word in (800, 8000, n_max):
        offsets = [build_words.word_offset(n_word, position) for position in (0.0, 0.37, 1.0)]
        assert offsets[0] == edge
        assert offsets[-1] + n_word == SR - edge
        assert all(edge <= o and o + n_word <= SR - edge for o in offsets)
    with pytest.raises(ValueError, match="does not fit"):
        build_words.word_offset(n_max + 1, 0.5)


def test_compose_clip_puts_the_whole_word_at_its_offset_and_level():
    word = np.sin(np.linspace(0, 60, 5000))
    clip = build_words.compose_clip(word, 3000, take(gain_db=3.0))
    assert clip.shape == (SR,) and clip.dtype == np.float32
    peak = 10 ** ((build_words.PEAK_DBFS + 3.0) / 20)
    np.testing.assert_allclose(clip[3000:8000], word / np.abs(word).max() * peak, atol=1e-6)
    assert not clip[:3000].any() and not clip[8000:].any()
    with pytest.raises(ValueError, match="leaves"):
        build_words.compose_clip(word, SR - 4999, take())


@pytest.mark.parametrize("noise", ["white", "pink"])
def test_compose_clip_adds_noise_at_the_asked_snr(noise):
    word = np.sin(np.linspace(0, 900, 6000))
    clip = build_words.compose_clip(word, 5000, take(snr_db=20.0, noise=noise, noise_seed=3)).astype(np.float64)
    silent = build_words.compose_clip(word, 5000, take())
    word_power = np.mean(silent[5000:11000].astype(np.float64) ** 2)
    noise_power = np.mean((clip - silent) ** 2)
    assert 10 * np.log10(word_power / noise_power) == pytest.approx(20.0, abs=0.2)


def test_pink_noise_has_more_low_than_high_frequency_power_and_white_noise_does_not():
    def low_over_high(kind):
        power = np.abs(np.fft.rfft(build_words.make_noise(kind, SR, np.random.default_rng(0)))) ** 2
        return power[20:200].mean() / power[4000:8000].mean()

    assert low_over_high("pink") > 10
    assert 0.7 < low_over_high("white") < 1.4


def test_say_word_renders_a_long_word_faster_instead_of_cutting_it(fake_espeak):
    # 14 letters at 80 words per minute: 1.7 s, more than the window holds
    word, speed = build_words.say_word("abcdefghijklmn", "en-us+m3", 50, 80)
    assert speed > 80
    assert fake_espeak["en-us+m3"] >= 2
    burst = int(16000 * (0.3 + 0.04 * 14) * 160 / speed)  # the stand-in's word at the speed used
    assert burst <= len(word) <= build_words.max_word_samples()


# ------------------------------------------------------------------ the build

def test_build_writes_one_second_16k_clips_named_and_grouped_by_voice(tmp_path, fake_espeak):
    out = tmp_path / "words"
    rows = build_words.build_words(out, voices=3, takes=2)
    assert len(rows) == 3 * 10 * 2
    metadata = read_metadata(out)
    assert REQUIRED_COLUMNS <= set(metadata[0])
    assert {row["class"] for row in metadata} == set(build_words.WORDS)
    for row in metadata:
        info = sf.info(out / row["clip"])
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        assert row["clip"] == f"{row['class']}/{row['class']}.{row['group']}.{row['take']}.wav"
        assert row["group"] == row["voice"] == f"{row['accent']}+{row['variant']}"
        assert voice_split(row["group"]) == "train"
        assert float(row["offset_s"]) >= build_words.EDGE_S
        assert float(row["offset_s"]) + float(row["duration_s"]) <= 1.0 - build_words.EDGE_S + 1e-3
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav")) == [r["clip"] for r in metadata]


def test_a_grouped_split_of_the_build_never_puts_one_voice_in_two_splits(tmp_path, fake_espeak):
    out = tmp_path / "words"
    build_words.build_words(out, voices=10, takes=1)
    groups = read_groups(out / "metadata.csv")  # what train.py and bench/accuracy.py read
    keys = sorted(groups)
    split = make_split(keys, [build_words.WORDS.index(k.split("/")[0]) for k in keys], groups)
    voices_of = {name: {groups[k] for k in split[name]} for name in split}
    assert all(voices_of.values())
    assert not voices_of["train"] & voices_of["val"] and not voices_of["train"] & voices_of["test"]
    assert not voices_of["val"] & voices_of["test"]


def test_a_rerun_renders_only_what_is_missing_and_gives_the_same_bytes(tmp_path, fake_espeak):
    out = tmp_path / "words"
    build_words.build_words(out, voices=3, takes=1)
    first = read_metadata(out)
    lost = out / first[0]["clip"]
    lost_bytes = lost.read_bytes()
    lost.unlink()
    with open(out / build_words.JOURNAL_NAME, "a") as journal:
        journal.write('{"key": "cut sh')  # an interrupted run's last line
    fake_espeak.clear()
    build_words.build_words(out, voices=3, takes=1)
    assert dict(fake_espeak) == {first[0]["group"]: 10}  # that voice's ten words, no other voice
    assert lost.read_bytes() == lost_bytes
    assert read_metadata(out) == first
    fake_espeak.clear()
    build_words.build_words(out, voices=3, takes=1)
    assert not fake_espeak


def test_the_same_seed_gives_the_same_files_and_another_seed_other_voices(tmp_path, fake_espeak):
    one = build_words.build_words(tmp_path / "one", voices=2, takes=1, seed=5)
    two = build_words.build_words(tmp_path / "two", voices=2, takes=1, seed=5)
    assert one == two
    assert all((tmp_path / "one" / r["clip"]).read_bytes() == (tmp_path / "two" / r["clip"]).read_bytes()
               for r in one)
    other = build_words.build_words(tmp_path / "other", voices=2, takes=1, seed=6)
    assert {r["group"] for r in other} != {r["group"] for r in one}


def test_held_out_build_has_only_held_out_voices_and_never_shares_a_folder(tmp_path, fake_espeak):
    rows = build_words.build_words(tmp_path / "held_out", voices=2, takes=1, held_out=True)
    assert {voice_split(r["group"]) for r in rows} == {"test"}
    build_words.build_words(tmp_path / "dev", voices=2, takes=1)
    with pytest.raises(build_words.HeldOutVoiceError, match="another folder"):
        build_words.build_words(tmp_path / "dev", voices=2, takes=1, held_out=True)
    with pytest.raises(build_words.HeldOutVoiceError, match="another folder"):
        build_words.build_words(tmp_path / "held_out", voices=2, takes=1)


def test_a_variant_espeak_ng_lacks_is_refused_rather_than_spoken_with_the_default(tmp_path, fake_espeak):
    _, data_dir = build_words.espeak_info()
    (data_dir / "voices" / "!v" / "Andy").unlink()
    voice = build_words.make_voice("en-us", "Andy")
    with pytest.raises(build_words.MissingToolError, match="Andy"):
        build_words.check_variants([voice], data_dir)


def test_without_espeak_ng_the_build_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(build_words, "ESPEAK", "espeak-ng-not-installed")
    with pytest.raises(build_words.MissingToolError, match="apt-get install -y --no-install-recommends espeak-ng"):
        build_words.build_words(tmp_path / "words", voices=1, takes=1)


def test_main_turns_a_bad_option_into_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        build_words.main(["--out", str(tmp_path / "words"), "--voices", "0"])
    assert str(exit_info.value).startswith("error: need voices >= 1")
    assert "\n" not in str(exit_info.value)


def test_main_prints_the_fingerprint_bench_accuracy_will_stamp_on_results(tmp_path, fake_espeak, capsys):
    out = tmp_path / "words"
    build_words.main(["--out", str(out), "--voices", "2", "--takes", "1"])
    printed = capsys.readouterr().out
    assert "20 clips of 1 s" in printed
    clips = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.wav"))  # what melify will find
    assert f"fingerprint {data_fingerprint(out, clips)}" in printed  # the function bench/accuracy.py stamps with


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_words.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "voices, each saying every word (default: 60)" in text
    assert "takes of every word per voice (default: 2)" in text


# ------------------------------------------------------------------ with espeak-ng

@needs_espeak
def test_espeak_ng_reads_every_foreign_spelling_in_its_own_language():
    for accent, texts in build_words.FOREIGN_TEXT.items():
        phonemes = subprocess.run(["espeak-ng", "-q", "-x", "-v", accent, " , ".join(texts)], capture_output=True,
                                  text=True, check=True).stdout
        assert "(" not in phonemes, f"{accent} switches language: {phonemes}"  # e.g. (en)r'aIt(fr)
        assert len(phonemes.split()) == len(texts), f"{accent} reads more or fewer words: {phonemes}"


@needs_espeak
def test_espeak_ng_has_every_variant():
    _, data_dir = build_words.espeak_info()
    build_words.check_variants([build_words.make_voice("en-us", v) for v in build_words.VARIANTS], data_dir)


@needs_espeak
def test_a_real_build_is_repeatable_with_each_word_inside_its_window(tmp_path):
    rows = build_words.build_words(tmp_path / "one", voices=2, takes=1)
    assert build_words.build_words(tmp_path / "two", voices=2, takes=1) == rows
    assert len(rows) == 20
    for row in rows:
        audio, rate = sf.read(tmp_path / "one" / row["clip"])
        assert (rate, audio.shape) == (16000, (16000,))
        start, length = round(row["offset_s"] * rate), round(row["duration_s"] * rate)
        word_power = np.mean(audio[start:start + length] ** 2)  # the word plus the noise under it
        noise_power = word_power / (1 + 10 ** (row["snr_db"] / 10))
        outside_power = np.mean(np.concatenate([audio[:start], audio[start + length:]]) ** 2)
        assert outside_power < 4 * noise_power  # nothing of the word outside its span: the noise alone
        assert (tmp_path / "two" / row["clip"]).read_bytes() == (tmp_path / "one" / row["clip"]).read_bytes()


def test_exclude_voices_of_an_earlier_build_renders_the_next_other_voices(tmp_path, fake_espeak):
    dev = build_words.build_words(tmp_path / "dev", voices=3, takes=1, seed=1)
    dev_voices = build_words.voices_of(tmp_path / "dev")
    assert dev_voices == {r["group"] for r in dev}
    pool = build_words.build_words(tmp_path / "pool", voices=4, takes=1, seed=1, exclude_groups=dev_voices)
    pool_voices = {r["group"] for r in pool}
    assert len(pool_voices) == 4 and not pool_voices & dev_voices
    assert pool_voices == {v.name for v in build_words.draw_voices(7, seed=1)} - dev_voices  # the next ones
