"""Model directories (model.safetensors + config.json): written from a checkpoint, loaded wherever a checkpoint is,
without unpickling anything."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vitaudio
from vitaudio import checkpoint as checkpoint_module
from vitaudio import predict
from vitaudio.checkpoint import CheckpointError, header_of, load_checkpoint, save_pretrained
from vitaudio.config import TrainConfig
from vitaudio.evaluate import evaluate_checkpoint
from vitaudio.inference import AudioClassifier, pipeline
from vitaudio.model import ViT, ViTConfig
from vitaudio.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def single_checkpoint(tiny_run) -> Path:
    """A trained single ViT: the first member of the shared tiny run."""
    return tiny_run / "member0" / "best.pt"


@pytest.fixture(scope="module")
def ensemble_checkpoint(tiny_run) -> Path:
    """The tiny run's two-member ensemble."""
    return tiny_run / "best.pt"


@pytest.fixture(scope="module")
def clips(tiny_run) -> list[Path]:
    audio = tiny_run.parent / "audio"
    return [audio / label / f"{label}.00000.wav" for label in ("bass", "mid", "treble")]


def as_json(value):
    """What a value reads as after a trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def test_model_directory_holds_exactly_the_weights_and_a_plain_json_config(single_checkpoint, tmp_path):
    model_dir = vitaudio.save_pretrained(single_checkpoint, tmp_path / "model")
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    config = json.loads((model_dir / "config.json").read_text())
    source = load_checkpoint(single_checkpoint)
    assert config["format"] == "vitaudio-pretrained-1" and config["classes"] == ["bass", "mid", "treble"]
    assert {k: v for k, v in config.items() if k in checkpoint_module.HEADER_KEYS} == as_json(header_of(source))
    assert "train_config" in config and "members" not in config
    weights = load_file(model_dir / "model.safetensors")
    assert weights.keys() == source["model"].keys()
    assert all(torch.equal(weights[name], tensor) for name, tensor in source["model"].items())


def test_model_directory_scores_exactly_as_its_checkpoint(single_checkpoint, clips, tmp_path):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")
    from_file, from_dir = pipeline(single_checkpoint, device="cpu"), pipeline(model_dir, device="cpu")
    np.testing.assert_array_equal(from_dir.logits(clips), from_file.logits(clips))
    assert from_dir(clips, top_k=None) == from_file(clips, top_k=None)
    assert header_of(load_checkpoint(model_dir)) == as_json(header_of(load_checkpoint(single_checkpoint)))


def test_from_pretrained_loads_a_model_directory(single_checkpoint, clips, tmp_path):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")
    classifier = AudioClassifier.from_pretrained(model_dir, device="cpu")
    assert classifier.classes == ["bass", "mid", "treble"]
    expected = pipeline(single_checkpoint, device="cpu").logits(clips[0])
    np.testing.assert_array_equal(classifier.logits(clips[0]), expected)


def test_model_directory_loads_without_unpickling(single_checkpoint, tmp_path, monkeypatch):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")

    def refuse(*args, **kwargs):
        raise AssertionError("a model directory was read with torch.load")

    monkeypatch.setattr(torch, "load", refuse)
    assert pipeline(model_dir, device="cpu").classes == ["bass", "mid", "treble"]
    config = json.loads((model_dir / "config.json").read_text())  # and with no vitaudio loader at all
    ViT(ViTConfig(**config["model_config"])).load_state_dict(load_file(model_dir / "model.safetensors"))


def test_ensemble_round_trip_keeps_the_members_keys_and_scores(ensemble_checkpoint, clips, tmp_path):
    model_dir = save_pretrained(load_checkpoint(ensemble_checkpoint), tmp_path / "ensemble")
    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(model_dir / "model.safetensors")
    assert config["members"] == 2 and {name.split(".")[1] for name in weights} == {"0", "1"}
    from_file, from_dir = pipeline(ensemble_checkpoint, device="cpu"), pipeline(model_dir, device="cpu")
    assert len(from_dir.model.members) == 2
    np.testing.assert_array_equal(from_dir.logits(clips), from_file.logits(clips))


def test_export_command_writes_a_model_directory(single_checkpoint, tmp_path):
    model_dir = tmp_path / "exported"
    result = subprocess.run([sys.executable, "-m", "vitaudio.export", str(single_checkpoint), "--format",
                             "safetensors", "--out", str(model_dir)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "read-back check passed" in result.stdout and str(model_dir) in result.stdout
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]


def test_export_replaces_an_earlier_model_and_refuses_a_folder_with_other_files(tiny_run, tmp_path):
    model_dir = save_pretrained(tiny_run / "member0" / "best.pt", tmp_path / "model")
    save_pretrained(tiny_run / "member1" / "best.pt", model_dir)
    member1 = load_checkpoint(tiny_run / "member1" / "best.pt")["model"]
    assert all(torch.equal(load_checkpoint(model_dir)["model"][name], t) for name, t in member1.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"notes: holds other files \(todo.txt\)"):
        save_pretrained(tiny_run / "member0" / "best.pt", tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_a_failed_write_leaves_the_earlier_model_whole(single_checkpoint, tmp_path, monkeypatch):
    earlier = save_pretrained(single_checkpoint, tmp_path / "model")
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(single_checkpoint, earlier)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(single_checkpoint, tmp_path / "new")
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # neither "new" nor a staging folder


def test_init_from_a_model_directory_starts_from_its_weights(ensemble_checkpoint, tiny_run, tmp_path, capsys):
    model_dir = save_pretrained(ensemble_checkpoint, tmp_path / "model")
    # a learning rate too small to move the weights: what training ends with is what it started from
    run_dir = train(TrainConfig(root=str(tiny_run.parent / "audio"), epochs=1, segment_seconds=1.0, members=1,
                                lr=1e-12, init_from=str(model_dir), out=str(tmp_path / "tuned")))
    assert f"initialised from {model_dir}" in capsys.readouterr().out
    tuned = load_checkpoint(run_dir / "best.pt")
    source = load_checkpoint(ensemble_checkpoint)
    assert tuned["classes"] == source["classes"] and tuned["model_config"] == source["model_config"]
    parameters = dict(ViT(ViTConfig(**tuned["model_config"])).named_parameters())  # BatchNorm statistics move
    for name in parameters:
        torch.testing.assert_close(tuned["model"][name], source["model"][f"members.0.{name}"], rtol=0, atol=1e-8)


def test_predict_and_evaluate_take_a_model_directory(single_checkpoint, clips, tiny_run, tmp_path, capsys):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")
    assert predict.main([str(model_dir), str(clips[0]), "--format", "json"]) == 0
    predictions = json.loads(capsys.readouterr().out)[0]["predictions"]
    assert predictions == pipeline(single_checkpoint, device="cpu")(clips[0])
    audio = tiny_run.parent / "audio"
    from_dir = evaluate_checkpoint(model_dir, audio, out=tmp_path / "eval-dir", device="cpu")
    from_file = evaluate_checkpoint(single_checkpoint, audio, out=tmp_path / "eval-file", device="cpu")
    assert from_dir["accuracy"] == from_file["accuracy"] and from_dir["n_clips"] == from_file["n_clips"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]


def test_directory_without_model_safetensors_is_refused_naming_the_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty/model\.safetensors: no such file.*--format safetensors"):
        pipeline(tmp_path / "empty", device="cpu")


def test_run_directory_is_refused_pointing_at_its_checkpoint(tiny_run):
    with pytest.raises(CheckpointError, match=r"model\.safetensors: no such file; pass the run's checkpoint .*best"):
        load_checkpoint(tiny_run)


@pytest.mark.parametrize("config_text, message", [
    ("{not json", r"config\.json: not valid JSON"),
    ('{"format": "something-else"}', r'config\.json: not a vitaudio model config'),
    ('{"format": "vitaudio-pretrained-1", "classes": ["a", "b"]}', r"config\.json: lacks model_config, mel_config"),
])
def test_corrupt_or_incomplete_config_is_refused_naming_it(single_checkpoint, tmp_path, config_text, message):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")
    (model_dir / "config.json").write_text(config_text)
    with pytest.raises(CheckpointError, match=message):
        pipeline(model_dir, device="cpu")


def test_truncated_weights_are_refused_naming_the_file(single_checkpoint, tmp_path):
    model_dir = save_pretrained(single_checkpoint, tmp_path / "model")
    weights_path = model_dir / "model.safetensors"
    weights_path.write_bytes(weights_path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(model_dir)
