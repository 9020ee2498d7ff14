"""Throughput of `vitaudio.melify` against the GTZAN blog's per-file librosa + matplotlib loop.

    python bench/melify_bench.py [--clips 60] [--repeats 3] [--no-profile] [--command-line-only]

Generates N seeded 30 s music-like clips (22,050 Hz mono 16-bit WAV, GTZAN class folders) in a temp dir and
converts them, in this process, four ways: (a) the blog (librosa.load + melspectrogram + power_to_db + specshow
rendered by matplotlib to an RGB PNG), (b) a plain librosa loop writing 16-bit PNGs with PIL defaults,
(c) melify with workers=1, (d) melify with all cores (its default: in-process below 250 clips per core)
and with a process pool forced, pool start-up included. Repeats are interleaved
and the best is reported (the machine is shared and noisy). Then the command a user runs, `python -m
vitaudio.melify`, over 48 and over 144 clips: the difference of the two wall times cancels the start-up, so 96 /
(t144 - t48) is its rate on a large corpus and t48 what a small one costs; the blog loop is timed on the same 48
clips. Then (profile) the time per clip of each stage of melify's worker path. A benchmark: it prints numbers and
asserts nothing.
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the blog renders off-screen
import librosa
import librosa.display
import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import soxr
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import vitaudio.melify as melify_module  # noqa: E402
from vitaudio.audio import load_audio, resample  # noqa: E402
from vitaudio.features import (  # noqa: E402
    MelConfig,
    db_to_png,
    encode_png16,
    log_mel,
    mel_filterbank,
    sparse_mel_filterbank,
    write_mel_png,
)
from vitaudio.melify import melify  # noqa: E402

SR, SECONDS = 22050, 30
GENRES = "blues classical country disco hiphop jazz metal pop reggae rock".split()


def make_clip(rng: np.random.Generator) -> np.ndarray:
    """A music-like clip -> (SR * SECONDS,) float32: three swelling harmonic tones plus decaying noise hits."""
    t = np.arange(SR * SECONDS, dtype=np.float32) / SR
    clip = np.zeros_like(t)
    for _ in range(3):
        f0, rate, phase = rng.uniform(80, 800), rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
        swell = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + phase)
        for k in range(1, 7):  # partials with 1/k amplitudes, below Nyquist
            if k * f0 < SR / 2:
                clip += swell * np.sin(2 * np.pi * k * f0 * t) / k
    hit_len = SR // 4
    hit_env = np.exp(-np.arange(hit_len) / (0.03 * SR)).astype(np.float32)
    for start in rng.integers(0, len(t) - hit_len, size=rng.integers(20, 60)):
        clip[start:start + hit_len] += 2 * rng.standard_normal(hit_len).astype(np.float32) * hit_env
    return 0.9 * clip / np.abs(clip).max()


def make_dataset(root: Path, n_clips: int, seed: int) -> list[Path]:
    """Write n_clips WAVs as root/<genre>/<genre>.<i>.wav (GTZAN layout); return their paths."""
    rng, paths = np.random.default_rng(seed), []
    for i in range(n_clips):
        genre = GENRES[i % len(GENRES)]
        path = root / genre / f"{genre}.{i // len(GENRES):05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, make_clip(rng), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def blog_one(path: Path, out: Path) -> None:
    """(a) The blog: librosa mel dB drawn by specshow into a 640x480 figure, saved as an RGB PNG."""
    samples, sr = librosa.load(path, sr=SR)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=samples, sr=sr), ref=np.max)  # (128, T)
    fig, ax = plt.subplots()
    librosa.display.specshow(mel_db, sr=sr, x_axis="time", y_axis="mel", ax=ax)
    ax.axis("off")
    fig.canvas.draw()
    Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB").save(out)  # (480, 640, 4) -> RGB
    plt.close(fig)


def plain_one(path: Path, out: Path) -> None:
    """(b) Plain librosa: mel dB in [-80, 0] -> 16-bit grey PNG (lowest band at the bottom), PIL defaults."""
    samples, sr = librosa.load(path, sr=SR)
    mel_db = librosa.power_to_db(librosa.feature.melspectrogram(y=samples, sr=sr), ref=np.max)  # (128, T)
    Image.fromarray(np.round((mel_db + 80) / 80 * 65535).astype(np.uint16)[::-1]).save(out)


def per_file_loop(convert_one):
    """A blog-style loop over SRC's class folders: convert_one(wav, png) for every clip."""
    def run(src: Path, dst: Path) -> None:
        for path in sorted(src.rglob("*.wav")):
            out = dst / path.relative_to(src).with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            convert_one(path, out)
    return run


def timed(fn, *args, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of its reaped children, i.e. pool workers) of one call."""
    cpu_start, start = sum(os.times()[:4]), time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start, sum(os.times()[:4]) - cpu_start


def table(header: list[str], rows: list[list]) -> str:
    lines = [header, ["---"] * len(header)] + [[str(cell) for cell in row] for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def summary(label: str, n_clips: int, times: list[tuple[float, float]]) -> dict:
    """One table row from [(wall s, CPU s)] per repeat: best and median wall, least CPU."""
    walls, cpus = zip(*times)
    return dict(label=label, clips=n_clips, best=min(walls), median=float(np.median(walls)), cpu=min(cpus))


def melify_one_thread(src: Path, dst: Path) -> None:
    """melify workers=1 with torch limited to 1 thread, as each pool worker is (diagnostic for (c))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        melify(src, dst, workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)


def melify_pool(src: Path, dst: Path) -> None:
    """melify with one process per core whatever the number of clips (pool start-up included)."""
    minimum = melify_module.CLIPS_PER_WORKER_MIN
    melify_module.CLIPS_PER_WORKER_MIN = 1
    try:
        melify(src, dst, workers=os.cpu_count(), progress=False)
    finally:
        melify_module.CLIPS_PER_WORKER_MIN = minimum


def throughput(src: Path, n_clips: int, warm: Path, tmp: Path, cores: int, repeats: int) -> dict[str, dict]:
    """Time each approach `repeats` times (interleaved) on the same clips, each run into a fresh folder."""
    approaches = {  # key -> (label, clips, run(src, dst))
        "a": ("(a) blog: librosa + specshow -> RGB PNG", n_clips, per_file_loop(blog_one)),
        "b": ("(b) plain librosa loop -> 16-bit PNG", n_clips, per_file_loop(plain_one)),
        "c": ("(c) melify workers=1", n_clips, lambda s, d: melify(s, d, workers=1, progress=False)),
        "c1": ("(c) melify workers=1, torch 1 thread (diagnostic)", n_clips, melify_one_thread),
        "d": (f"(d) melify, all {cores} cores (default)", n_clips,
              lambda s, d: melify(s, d, workers=cores, progress=False)),
        "pool": (f"(d) melify, a {cores}-process pool forced", n_clips, melify_pool),
    }
    for _, _, run in approaches.values():  # untimed: numba compile, font cache, imports
        run(warm, tmp / "warm-up")
        shutil.rmtree(tmp / "warm-up")
    times = {key: [] for key in approaches}  # key -> [(wall s, CPU s)] per repeat
    for _ in range(repeats):
        for key, (_, _, run) in approaches.items():
            times[key].append(timed(run, src, tmp / "out"))
            shutil.rmtree(tmp / "out")
    rows = {key: summary(label, n, times[key]) for key, (label, n, _) in approaches.items()}
    if rows["pool"]["best"] > rows["c"]["best"]:  # pool start-up outweighs its gain here: rerun on 4x the clips
        for path in sorted(src.rglob("*.wav")):
            for copy in range(4):  # links: same audio, new names
                link = tmp / "src_x4" / path.parent.name / f"{path.stem}.c{copy}.wav"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
        x4 = [timed(approaches["d"][2], tmp / "src_x4", tmp / f"out_x4_{i}") for i in range(repeats)]
        rows["d4x"] = summary(f"(d) melify, all {cores} cores (default), 4x clips (links)", 4 * n_clips, x4)
    return rows


def command_line(tmp: Path, repeats: int) -> None:
    """`python -m vitaudio.melify` over 48 and 144 clips (best of `repeats`) against the blog loop over the 48."""
    src = {n: tmp / f"cli{n}" for n in (48, 144)}
    paths = make_dataset(src[144], 144, seed=2)
    for path in paths[:48]:  # the first 48 of the same clips, as links
        link = src[48] / path.relative_to(src[144])
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    command = [sys.executable, "-m", "vitaudio.melify"]
    walls = {n: [] for n in src}
    blog = []
    for _ in range(repeats):
        for n, folder in src.items():
            out = tmp / f"cli-out{n}"
            start = time.perf_counter()
            subprocess.run([*command, str(folder), str(out)], check=True, capture_output=True,
                           cwd=Path(__file__).resolve().parents[1])
            walls[n].append(time.perf_counter() - start)
            shutil.rmtree(out)
        blog.append(timed(per_file_loop(blog_one), src[48], tmp / "cli-blog")[0])
        shutil.rmtree(tmp / "cli-blog")
    t48, t144, blog_rate = min(walls[48]), min(walls[144]), 48 / min(blog)
    rate = 96 / (t144 - t48)
    print(f"\n### The command line: python -m vitaudio.melify, 48 and 144 clips (best of {repeats})\n")
    print(table(["run", "wall s", "clips/s", "x blog"],
                [["blog loop, 48 clips (in this process)", f"{min(blog):.2f}", f"{blog_rate:.1f}", "1.0"],
                 ["melify, 48 clips (start-up included)", f"{t48:.2f}", f"{48 / t48:.1f}",
                  f"{48 / t48 / blog_rate:.1f}"],
                 ["melify, 144 clips (start-up included)", f"{t144:.2f}", f"{144 / t144:.1f}",
                  f"{144 / t144 / blog_rate:.1f}"],
                 ["melify, the 96 more clips: 96 / (t144 - t48)", f"{t144 - t48:.2f}", f"{rate:.1f}",
                  f"{rate / blog_rate:.1f}"]]))
    print(f"\nmelify: {rate / blog_rate:.1f}x the blog loop at scale, {48 / t48 / blog_rate:.1f}x on 48 clips with "
          f"its start-up; load average now {os.getloadavg()[0]:.1f}")


def profile(paths: list[Path], tmp: Path) -> None:
    """Per-clip ms of each stage of melify's worker path, with 1 torch thread as in the pool."""
    config, threads = MelConfig(), torch.get_num_threads()
    torch.set_num_threads(1)
    window, filters = torch.hann_window(config.n_fft), sparse_mel_filterbank(config)
    dense_filters = torch.from_numpy(mel_filterbank(config))
    stages: dict[str, list[float]] = {}  # name -> ms per clip; insertion order = table order
    sizes: dict[str, str] = {}

    def clock(name, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        stages.setdefault(name, []).append(1e3 * (time.perf_counter() - start))
        return result

    def encode(name, image, level):
        buffer = io.BytesIO()
        clock(name, Image.fromarray(image).save, buffer, "PNG", compress_level=level)
        sizes[name] = f" ({buffer.tell() / 1024:.0f} KiB)"

    def encode_ours(name, image):
        sizes[name] = f" ({len(clock(name, encode_png16, image)) / 1024:.0f} KiB)"

    for path in paths:
        samples = clock("1 decode: load_audio (sf.read, int16 -> float32, mono)", load_audio, path, SR)
        mel_db = clock("2 log_mel (STFT in cache-sized chunks of frames)", log_mel, samples, config)  # (128, 1292) dB
        waveform = torch.from_numpy(samples)[None]  # (S,) -> (1, S)
        spectrum = clock("ref: one whole-clip torch.stft -> (1, 1025, 1292) complex64", lambda w: torch.stft(
            w, config.n_fft, config.hop_length, window=window, pad_mode="constant", return_complex=True), waveform)
        clock("ref: + its power, sparse mel product (128 x 1025, 1.5 % non-zero), dB", lambda s: 10 * torch.log10(
            (filters @ (s.real.square() + s.imag.square())[0]).clamp_min(1e-10)), spectrum)
        clock("ref: + the same with the dense mel matrix", lambda s: 10 * torch.log10(
            (dense_filters @ (s.real.square() + s.imag.square())).clamp_min(1e-10)), spectrum)
        clock("3 write_mel_png (temp file + rename)", write_mel_png, tmp / "profile.png", mel_db)
        image = clock("3.1 db_to_png: dB -> (128, 1292) uint16", db_to_png, mel_db)
        encode_ours("3.2 PNG encode: features.encode_png16 (melify)", image)
        encode("ref: Pillow PNG encode compress_level=0", image, 0)
        encode("ref: Pillow PNG encode compress_level=1", image, 1)
        encode("ref: Pillow PNG encode compress_level=6 (its default)", image, 6)
        at_44k = soxr.resample(samples, SR, 44100)  # (2 S,): input for a resample melify skips here
        clock("ref: resample 44.1 -> 22.05 kHz (soxr HQ)", resample, at_44k, 44100, SR)
        clock("ref: librosa.load", librosa.load, path, sr=SR)
        clock("ref: librosa melspectrogram + power_to_db", lambda y: librosa.power_to_db(
            librosa.feature.melspectrogram(y=y, sr=SR), ref=np.max), samples)
    torch.set_num_threads(threads)
    best = {name: min(ms) for name, ms in stages.items()}
    total = sum(best[name] for name in best if name[0].isdigit() and "." not in name.split()[0])
    print(f"\n### melify worker path, ms per clip over {len(paths)} clips, 1 torch thread\n")
    print(table(["stage", "median ms", "best ms", "share of 1+2+3 (best)"],
                [[name + sizes.get(name, ""), f"{np.median(stages[name]):.1f}", f"{ms:.1f}",
                  f"{100 * ms / total:.0f}%"] for name, ms in best.items()]))
    print(f"\n1 + 2 + 3 = {total:.1f} ms per clip (best) -> {1e3 / total:.0f} clips/s per core at most")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=60, help="30 s clips to convert (>= 50 for the report)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per approach; the best is reported")
    parser.add_argument("--profile-clips", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--command-line-only", action="store_true",
                        help="time only the command line against the blog loop (48 and 144 clips)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="melify_bench_") as tmp_name:
        tmp = Path(tmp_name)
        paths = make_dataset(tmp / "src", args.clips, seed=0)
        make_dataset(tmp / "warm", 2, seed=1)
        print(f"{args.clips} clips x {SECONDS} s at {SR} Hz; {cores} cores, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads in this process), librosa {librosa.__version__}; "
              f"load average {os.getloadavg()[0]:.1f}\n")
        if args.command_line_only:
            command_line(tmp, args.repeats)
            return
        rows = throughput(tmp / "src", args.clips, tmp / "warm", tmp, cores, args.repeats)
        rate = {key: row["clips"] / row["best"] for key, row in rows.items()}  # clips/s of the best run
        print(table(["approach", "clips", "best s", "median s", "clips/s (best)", "x blog (a)", "x plain (b)",
                     "CPU ms/clip"],
                    [[row["label"], row["clips"], f"{row['best']:.2f}", f"{row['median']:.2f}", f"{rate[key]:.1f}",
                      f"{rate[key] / rate['a']:.1f}", f"{rate[key] / rate['b']:.2f}",
                      f"{1e3 * row['cpu'] / row['clips']:.0f}"] for key, row in rows.items()]))
        top = max(rate[key] for key in ("d", "d4x") if key in rows)
        print(f"melify all cores, best (d) row: {top / rate['a']:.1f}x blog, {top / rate['b']:.2f}x plain librosa; "
              f"load average now {os.getloadavg()[0]:.1f}")
        command_line(tmp, args.repeats)
        if not args.no_profile:
            profile(paths[:args.profile_clips], tmp)


if __name__ == "__main__":
    main()
