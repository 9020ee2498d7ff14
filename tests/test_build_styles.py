"""bench/data/build_styles.py's bookkeeping, which needs neither music21 nor FluidSynth: which works are held out,
which works a build selects, clip numbering, trimming and the resume journal."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BUILDER = Path(__file__).parents[1] / "bench" / "data" / "build_styles.py"
spec = importlib.util.spec_from_file_location("bench_build_styles", BUILDER)
build_styles = sys.modules["bench_build_styles"] = importlib.util.module_from_spec(spec)  # a script, not a package
spec.loader.exec_module(build_styles)

Work = build_styles.Work
group_split = build_styles.group_split


def fake_works(class_name: str, n_groups: int, works_per_group: int = 1) -> list:
    return [Work(class_name, f"{class_name}:work {g}", f"{class_name}/work{g}.{w}.mxl", None)
            for g in range(n_groups) for w in range(works_per_group)]


def test_group_split_is_the_fixed_sha1_rule():
    # The held-out pool must stay the same works from build to build: these are SHA-1 buckets 5, 29, 198, 234
    # (held out, < 300) and 441, 493, 616, 663, 703 (development) of real corpus groups.
    held_out = ["cha:beethoven/opus18no1", "mon:madrigal.3.1.mxl", "cha:haydn/opus74no1", "cha:beethoven/opus59no1"]
    development = ["tre:Fava_Dicant_nunc_iudei.xml", "irl:enchanted valley", "pal:Missa De Beata Marie Virginis (I)",
                   "bach:nimm von uns herr du treuer gott", "cha:mozart/k80"]
    assert [group_split(g) for g in held_out] == ["test"] * len(held_out)
    assert [group_split(g) for g in development] == ["train"] * len(development)


def test_group_split_is_deterministic_and_keeps_about_70_percent_for_development():
    groups = [f"irl:tune {i}" for i in range(5000)]
    splits = [group_split(g) for g in groups]
    assert splits == [group_split(g) for g in groups]
    assert set(splits) == {"train", "test"}
    assert 0.67 < splits.count("train") / len(groups) < 0.73


def test_builder_imports_and_splits_without_music21_or_fluidsynth():
    code = ("import sys, importlib.util\n"
            "sys.modules['music21'] = sys.modules['fluidsynth'] = None  # importing either now fails\n"
            f"spec = importlib.util.spec_from_file_location('b', {str(BUILDER)!r})\n"
            "b = sys.modules['b'] = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(b)\n"
            "print(b.group_split('irl:enchanted valley'))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "train"


def test_enumerating_the_corpus_without_music21_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(build_styles.MissingToolError, match="pip install music21"):
        build_styles.enumerate_works()


def test_select_works_skips_every_held_out_work():
    works = fake_works("irish_oneills", 400) + fake_works("classical_chamber", 40, works_per_group=4)
    assert any(group_split(w.group) == "test" for w in works)
    selected = build_styles.select_works(works, per_class=1000)  # asks for more than there is: takes all it may
    assert selected
    assert all(group_split(w.group) == "train" for w in selected)
    assert set(selected) == {w for w in works if group_split(w.group) == "train"}


def test_select_works_reserves_a_few_spare_clips_per_class():
    works = fake_works("irish_oneills", 400)  # one clip per work
    selected = build_styles.select_works(works, per_class=60, class_names=["irish_oneills"])
    assert len(selected) == 65  # 60 x 1.05 + 2: spares for scores that fail to parse
    assert len(set(w.group for w in selected)) == len(selected)


def test_select_works_takes_one_work_per_group_before_a_second():
    works = fake_works("classical_chamber", 30, works_per_group=4)  # four movements per quartet, 5 clips each
    n_development_groups = len({w.group for w in works if group_split(w.group) == "train"})
    selected = build_styles.select_works(works, per_class=60, class_names=["classical_chamber"])
    assert len(selected) == 13  # 13 x 5 clips >= 60 x 1.05 + 2
    assert len({w.group for w in selected}) == min(len(selected), n_development_groups)


def test_select_works_is_seeded():
    works = fake_works("irish_oneills", 400)
    first = build_styles.select_works(works, per_class=10, seed=0)
    assert build_styles.select_works(list(reversed(works)), per_class=10, seed=0) == first  # order-free
    assert build_styles.select_works(works, per_class=10, seed=1) != first


def test_plan_jobs_refuses_a_held_out_work():
    held_out = next(w for w in fake_works("trecento", 50) if group_split(w.group) == "test")
    with pytest.raises(build_styles.HeldOutWorkError, match="held out"):
        build_styles.plan_jobs([held_out], seconds=30.0)


def test_plan_jobs_numbers_clips_within_each_class_reserving_clips_per_work():
    works = build_styles.select_works(fake_works("classical_chamber", 40, 2) + fake_works("trecento", 40),
                                      per_class=8, class_names=["classical_chamber", "trecento"])
    jobs = build_styles.plan_jobs(works, seconds=30.0)
    chamber = [job for job in jobs if job.work.class_name == "classical_chamber"]
    assert [job.first_index for job in chamber] == [0, 5, 10]  # 5 clips per chamber work
    assert chamber[1].clip_name(2) == "classical_chamber/classical_chamber.00007.wav"
    trecento = [job for job in jobs if job.work.class_name == "trecento"]
    assert [job.first_index for job in trecento] == list(range(len(trecento)))
    assert len({job.seed for job in jobs}) == len(jobs)


def test_keep_per_class_keeps_the_first_clips_by_name():
    rows = [{"clip": f"{c}/{c}.{i:05d}.wav", "class": c} for c in ("a", "b") for i in (7, 0, 3)]
    kept, dropped = build_styles.keep_per_class(rows, per_class=2)
    assert [r["clip"] for r in kept] == ["a/a.00000.wav", "a/a.00003.wav", "b/b.00000.wav", "b/b.00003.wav"]
    assert [r["clip"] for r in dropped] == ["a/a.00007.wav", "b/b.00007.wav"]


def test_read_journal_ignores_a_line_cut_short_and_keeps_the_latest_entry(tmp_path):
    journal = tmp_path / build_styles.JOURNAL_NAME
    lines = [json.dumps({"key": "k1", "rows": [], "failure": "parse failed"}),
             json.dumps({"key": "k1", "rows": [{"clip": "a/a.00000.wav"}], "failure": None}),
             '{"key": "k2", "rows": [{"cl']
    journal.write_text("\n".join(lines))
    entries = build_styles.read_journal(journal)
    assert set(entries) == {"k1"}
    assert entries["k1"]["rows"] == [{"clip": "a/a.00000.wav"}]


def test_classify_entry_names_the_source_work_as_group(tmp_path):
    def classify(source, number=None, title=None):
        return build_styles.classify_entry(source, number, title, tmp_path, {"153.1": "nun lob mein seel"})

    assert classify("bach/bwv153.1.mxl") == ("bach_chorale", "bach:nun lob mein seel")
    assert classify("beethoven/opus59no1/movement2.mxl") == ("classical_chamber", "cha:beethoven/opus59no1")
    assert classify("oneills1850/0001-0050.abc", "3", "The Rose Tree Reel No. 2") == ("irish_oneills",
                                                                                      "irl:rose tree")
    assert classify("airdsAirs/book1.abc", "9", None) == ("scottish_aird", "sco:airdsAirs/book1.abc#9")
    assert classify("schoenberg/opus19/movement2.mxl") is None


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_styles.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "clips per class (default: 60)" in text
    assert "(default: 30.0)" in text


def test_rendering_without_fluidsynth_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "fluidsynth", None)
    with pytest.raises(build_styles.MissingToolError, match="pyfluidsynth"):
        build_styles.Synthesizer(tmp_path / "any.sf2")
