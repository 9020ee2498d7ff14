"""bench/accuracy.py's bookkeeping: the data fingerprint that keeps builds of a data set apart, the blog image cache,
the member budget and the paired interval between the default and each contender."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

spec = importlib.util.spec_from_file_location("bench_accuracy", Path(__file__).parents[1] / "bench" / "accuracy.py")
accuracy = sys.modules["bench_accuracy"] = importlib.util.module_from_spec(spec)  # a script, not a package
spec.loader.exec_module(accuracy)


def write_tree(root: Path, payload: bytes = b"B") -> list[str]:
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.wav").write_bytes(b"A" * 3000)
    (root / "a" / "2.wav").write_bytes(payload * 10)
    return ["a/1.wav", "a/2.wav"]


def test_data_fingerprint_tells_builds_apart(tmp_path):
    files = write_tree(tmp_path / "one")
    write_tree(tmp_path / "same")
    write_tree(tmp_path / "rebuilt", payload=b"C")
    one = accuracy.data_fingerprint(tmp_path / "one", files)
    assert len(one) == 12
    assert accuracy.data_fingerprint(tmp_path / "same", list(reversed(files))) == one  # order-free, content-bound
    assert accuracy.data_fingerprint(tmp_path / "rebuilt", files) != one


def result(seed: int, data: str):
    return accuracy.RunResult("classical", "fold0", seed, 0.5, 0.5, {}, [[1]], 1.0, None, data=data)


def test_results_of_another_build_are_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    accuracy.save_result(path, result(0, ""))  # a row from before fingerprints: accepted
    accuracy.save_result(path, result(1, "aaaa"))
    accuracy.save_result(path, result(1, "aaaa"))  # a re-run replaces its row
    assert [r.seed for r in accuracy.read_results(path)] == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left behind
    accuracy.check_same_data(path, "aaaa")
    with pytest.raises(SystemExit, match="another build of the data .*aaaa.* Pass another --out"):
        accuracy.check_same_data(path, "bbbb")


def test_blog_images_come_from_the_png_cache_at_each_size(tmp_path):
    from PIL import Image

    root, mel_root = tmp_path / "songs", tmp_path / "songs.mel"
    mel_root.mkdir()
    (mel_root / "melify.json").write_text('{"files": [{"source": "a/1.wav", "output": "a/1.png"}, '
                                         '{"source": "b/2.wav", "output": "b/2.png"}]}')
    for key in ("a/1", "b/2"):  # the blog's renders, already cached: no audio needed
        png = tmp_path / "songs.blog-png" / f"{key}.png"
        png.parent.mkdir(parents=True)
        Image.new("RGBA", (496, 369), (200, 10, 90, 255)).save(png)
    bench = accuracy.Bench(root, mel_root, ["a", "b"], tmp_path / "out", 60.0, torch.device("cpu"))
    for size in (224, 480):
        images = accuracy.blog_images(bench, ["a/1", "b/2"], size)
        assert sorted(images) == ["a/1", "b/2"]
        assert images["a/1"].shape == (3, size, size) and images["a/1"].dtype == torch.uint8
        assert images["b/2"][:, 0, 0].tolist() == [200, 10, 90]  # RGB, alpha dropped
    assert sorted(bench.prep_seconds) == ["blog images 224 px", "blog images 480 px"]


def test_member_budget_gives_each_member_an_equal_share_of_what_is_left(monkeypatch):
    clock = iter([0,  # the budget starts: 80 s for 2 members, 40 s for the first
                  0, 10, 20, 30, 40,  # member 0: epochs of 10 s; a fifth would end at 50 s, past its 40
                  45, 55, 65, 80])  # member 1 gets the 35 s left: epochs of 10, 10, 15 s; a fourth would not fit
    monkeypatch.setattr(accuracy, "budget_clock", lambda: next(clock))
    budget = accuracy.MemberBudget(budget_s=80, members=2)
    assert [budget(epoch) for epoch in (1, 2, 3, 4, 5)] == [False, False, False, False, True]
    assert [budget(epoch) for epoch in (1, 2, 3, 4)] == [False, False, False, True]


def run_with(contender: str, split: str, right: dict[str, bool]) -> "accuracy.RunResult":
    """A run that predicted each clip's own class where `right` says so, another class elsewhere."""
    predicted = {key: key.split("/")[0] if ok else "other" for key, ok in right.items()}
    return accuracy.RunResult(contender, split, 0, sum(right.values()) / len(right), 0.0, {}, [], 1.0, 1,
                              predicted=predicted)


def test_paired_difference_resamples_whole_groups_and_needs_both_contenders_on_a_fold():
    keys = [f"c{k % 2}/clip{k}" for k in range(40)]
    groups = {key: f"work{k // 4}" for k, key in enumerate(keys)}  # 10 works of 4 clips
    better = [run_with("vitaudio", "fold0", dict.fromkeys(keys, True)),
              run_with("cnn", "fold0", {key: k % 4 != 0 for k, key in enumerate(keys)})]  # one clip in 4 wrong
    d = accuracy.paired_difference(better, "cnn", groups)
    assert (d["runs"], d["clips"], d["groups"]) == (1, 40, 10) and d["difference"] == pytest.approx(25.0)
    assert d["low"] == d["high"] == pytest.approx(25.0)  # every work differs alike: no spread to resample

    level = [run_with("vitaudio", "fold0", {key: k < 20 for k, key in enumerate(keys)}),
             run_with("cnn", "fold0", {key: k >= 20 for k, key in enumerate(keys)})]  # each right on other works
    d = accuracy.paired_difference(level, "cnn", groups)
    assert d["difference"] == pytest.approx(0.0) and d["low"] < -30 and d["high"] > 30
    assert accuracy.paired_difference([*level, run_with("classical", "fold1", {keys[0]: True})], "classical",
                                      groups) is None  # no vitaudio run on fold1 to pair with
