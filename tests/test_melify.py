import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import SR, write_tone
from PIL import Image

from vitaudio.features import MelConfig, mel_config_for, read_mel_png
from vitaudio.melify import MANIFEST, LayoutError, Shard, find_class_root, melify


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitaudio.melify", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def png_bytes(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_writes_one_16bit_png_per_clip_and_a_manifest(tone_tree, tmp_path):
    dst = tmp_path / "dst"
    report = melify(tone_tree, dst, workers=1, progress=False)
    assert report.summary() == "converted 4, up to date 0, failed 0"
    assert sorted(png_bytes(dst)) == ["high/high.00000.png", "high/high.00001.png",
                                      "low/low.00000.png", "low/low.00001.png"]
    derived = mel_config_for(SR, 2.0)  # 2 s clips: the short-clip parameters
    with Image.open(dst / "low/low.00000.png") as image:
        assert image.mode == "I;16" and image.size == (derived.n_frames(2 * SR), derived.n_mels)
    manifest = json.loads((dst / "melify.json").read_text())
    assert manifest["mel_config"] == derived.to_dict() and manifest["vitaudio_version"]
    assert manifest["files"][0] == {"source": "high/high.00000.wav", "output": "high/high.00000.png",
                                    "duration": 2.0, "status": "converted", "error": None}


def test_bad_files_are_reported_and_skipped_without_stopping_the_run(tone_tree, tmp_path):
    (tone_tree / "low/corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (tone_tree / "low/empty.wav").write_bytes(b"")
    (tone_tree / "low/notes.txt").write_text("not audio")
    (tone_tree / "low/.hidden.wav").write_bytes(b"junk")
    write_tone(tone_tree / "high/tiny.wav", seconds=0.09)  # 1984 samples < one 2048-sample window
    write_tone(tone_tree / "high/short.wav", seconds=0.1)  # 2205 samples: one window fits
    music = ("--sample-rate", SR, "--n-fft", 2048, "--hop-length", 512, "--n-mels", 128)
    result = run_cli(tone_tree, tmp_path / "dst", *music, "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "converted 5, up to date 0, failed 3" in result.stdout
    records = {r["source"]: r for r in json.loads((tmp_path / "dst/melify.json").read_text())["files"]}
    assert "low/notes.txt" not in records and "low/.hidden.wav" not in records
    assert "too short" in records["high/tiny.wav"]["error"]
    assert records["high/short.wav"]["status"] == "converted"
    assert read_mel_png(tmp_path / "dst/high/short.png").shape == (128, 5)
    for name in ("low/corrupt.wav", "low/empty.wav"):
        assert records[name]["status"] == "failed" and records[name]["error"]
        assert str(tone_tree / name) in result.stderr  # reported with its path


def test_exit_status_is_nonzero_when_nothing_converts(tmp_path):
    (tmp_path / "src/a").mkdir(parents=True)
    (tmp_path / "src/a/bad.wav").write_bytes(b"junk")
    result = run_cli(tmp_path / "src", tmp_path / "dst")
    assert result.returncode == 1 and "converted 0, up to date 0, failed 1" in result.stdout


def test_source_without_class_folders_explains_the_layout(tmp_path):
    write_tone(tmp_path / "flat/clip.wav")
    result = run_cli(tmp_path / "flat", tmp_path / "dst")
    assert result.returncode == 2 and "one folder per class" in result.stderr


@pytest.mark.parametrize("wrapper", ["genres", "genres_original"])
def test_gtzan_archive_layout_is_found(tmp_path, wrapper):
    write_tone(tmp_path / f"gtzan/{wrapper}/jazz/jazz.00000.au")
    (tmp_path / "gtzan/features_30_sec.csv").write_text("x")
    assert find_class_root(tmp_path / "gtzan") == tmp_path / f"gtzan/{wrapper}"
    report = melify(tmp_path / "gtzan", tmp_path / "dst", workers=1, progress=False)
    assert report.n_ok == 1 and (tmp_path / "dst/jazz/jazz.00000.png").exists()


def test_rerun_skips_up_to_date_images(tone_tree, tmp_path):
    melify(tone_tree, tmp_path / "dst", workers=1, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "dst").rglob("*.png")}
    report = melify(tone_tree, tmp_path / "dst", workers=1, progress=False)
    assert report.summary() == "converted 0, up to date 4, failed 0"
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert report.records[0]["duration"] == 2.0


def test_other_parameters_are_refused_unless_overwrite(tone_tree, tmp_path):
    melify(tone_tree, tmp_path / "dst", MelConfig(), workers=1, progress=False)
    with pytest.raises(LayoutError, match="n_mels: 128 -> 64"):
        melify(tone_tree, tmp_path / "dst", MelConfig(n_mels=64), workers=1, progress=False)
    report = melify(tone_tree, tmp_path / "dst", MelConfig(n_mels=64), workers=1, overwrite=True, progress=False)
    assert report.summary() == "converted 4, up to date 0, failed 0"
    assert read_mel_png(tmp_path / "dst/low/low.00000.png").shape[0] == 64


def test_foreign_nonempty_destination_is_refused(tone_tree, tmp_path):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst/precious.txt").write_text("keep me")
    with pytest.raises(LayoutError, match="not made by melify"):
        melify(tone_tree, tmp_path / "dst", workers=1, progress=False)


def test_resume_after_interrupt_is_byte_identical(tone_tree, tmp_path, monkeypatch):
    melify(tone_tree, tmp_path / "full", workers=1, progress=False)
    monkeypatch.setattr("vitaudio.melify.CLIPS_PER_WORKER_MIN", 1)  # the resumed run uses a process pool
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "full", partial)
    (partial / "low/low.00001.png").unlink()  # never written
    (partial / "high/high.00000.png").rename(partial / "high/.high.00000.png.123.tmp")  # half written
    report = melify(tone_tree, partial, workers=2, progress=False)
    assert report.summary() == "converted 2, up to date 2, failed 0"
    assert png_bytes(partial) == png_bytes(tmp_path / "full")
    assert not list(partial.rglob(".*.tmp"))


def test_kill_9_mid_run_then_rerun_completes(tmp_path):
    src = tmp_path / "src"
    for i in range(40):
        write_tone(src / ("a" if i % 2 else "b") / f"clip{i:03d}.wav", 200 + 40 * i, seconds=8.0)
    melify(src, tmp_path / "reference", workers=1, progress=False)
    dst = tmp_path / "dst"
    proc = subprocess.Popen([sys.executable, "-m", "vitaudio.melify", str(src), str(dst), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(dst.rglob("*.png"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(dst.rglob("*.png")))
    assert 0 < n_before < 40, "the kill should land mid-run"
    report = melify(src, dst, workers=1, progress=False)
    assert report.counts["up to date"] >= n_before and report.n_ok == 40
    assert png_bytes(dst) == png_bytes(tmp_path / "reference")


def test_importing_melify_does_not_load_the_model():
    code = "import sys, vitaudio.melify; print('vitaudio.model' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_a_rerun_keeps_every_clip_in_the_manifest_while_it_converts_new_ones(tone_tree, tmp_path, monkeypatch):
    import vitaudio.melify as melify_module

    dst = tmp_path / "mels"
    melify(tone_tree, dst, progress=False)
    write_tone(tone_tree / "low" / "low.new.wav", 250.0)
    seen_while_converting, real_run = [], melify_module._run

    def run_and_look(tasks, workers, **kwargs):  # another process reading DST meanwhile (a training) sees this manifest
        seen_while_converting.append({r["source"] for r in json.loads((dst / MANIFEST).read_text())["files"]})
        return real_run(tasks, workers, **kwargs)

    monkeypatch.setattr(melify_module, "_run", run_and_look)
    melify(tone_tree, dst, progress=False)
    assert seen_while_converting == [{"high/high.00000.wav", "high/high.00001.wav", "low/low.00000.wav",
                                      "low/low.00001.wav"}]
    assert len(json.loads((dst / MANIFEST).read_text())["files"]) == 5


def test_three_shards_at_once_then_a_merging_run_give_what_one_run_gives(tmp_path):
    src = tmp_path / "src"
    for i in range(11):
        write_tone(src / ("a" if i % 2 else "b") / f"clip{i:03d}.wav", 200 + 60 * i)
    (src / "b" / "broken.wav").write_bytes(b"RIFF not audio")
    melify(src, tmp_path / "one", workers=1, progress=False)
    dst = tmp_path / "sharded"
    procs = [subprocess.Popen([sys.executable, "-m", "vitaudio.melify", str(src), str(dst), "--shard", f"{i}/3",
                               "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (1, 2, 3)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    parts = [json.loads((dst / f"melify.shard-{i}-of-3.json").read_text())["files"] for i in (1, 2, 3)]
    assert sorted(len(part) for part in parts) == [4, 4, 4]  # 12 files, every third to each part
    assert not (dst / MANIFEST).exists()
    report = melify(src, dst, workers=1, progress=False)  # converts nothing that is done, merges the parts
    assert report.counts["converted"] == 0 and report.counts["up to date"] == 11
    assert png_bytes(dst) == png_bytes(tmp_path / "one")

    def outcome(root):  # each file's record, with what its run did to it folded into done / failed
        return [{**r, "status": r["status"] != "failed"} for r in json.loads((root / MANIFEST).read_text())["files"]]

    assert outcome(dst) == outcome(tmp_path / "one")
    assert sorted(r["source"] for part in parts for r in part) == sorted(r["source"] for r in outcome(dst))
    assert not list(dst.glob("melify.shard-*"))  # merged, so removed


def test_shard_numbers_are_checked_and_parts_cover_every_clip_once():
    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(LayoutError, match="expected I/N with 1 <= I <= N"):
            Shard.parse(bad)
    shards = [Shard(i, 4) for i in (1, 2, 3, 4)]
    assert all(sum(shard.holds(position) for shard in shards) == 1 for position in range(50))
