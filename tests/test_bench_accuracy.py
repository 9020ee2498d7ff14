"""bench/accuracy.py's bookkeeping: the data fingerprint that keeps runs on different builds of a data set apart."""
import importlib.util
import sys
from pathlib import Path

import pytest

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
