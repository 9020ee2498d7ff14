"""The package's data flow runs one way: a module imports only modules upstream of it."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vitaudio"

# Upstream first. A module may import the leaves and the modules of earlier stages, never a later stage's, nor
# another module of its own stage.
LEAVES = ["errors", "files", "cli_help"]  # no vitaudio imports of their own; any module may use them
STAGES = [
    ["audio"],  # decode files to samples
    ["features"],  # the one log-mel definition, its PNG storage, the clip statistics
    ["plots"],  # matplotlib figures, for any stage after the features
    ["manifest"],  # data sets listed in a CSV or JSON Lines file
    ["melify", "demo"],  # audio folders -> mel PNGs; the synthetic demo set
    ["store"],  # the PNGs of a melify output as one memory-mapped file
    ["splits"],
    ["data"],  # datasets over melify output
    ["model"],
    ["scoring"],  # device, autocast, segment logits -> clip logits (training and inference alike)
    ["tagging"],  # multi-label metrics: average precision, thresholds
    ["checkpoint"],
    ["report"],  # test reports and the files they are written to
    ["distributed"],
    ["rundir", "tensorboard_log"],  # run directory, RNG state, metrics.jsonl; the epochs as TensorBoard events
    ["engine"],  # the one training loop
    ["config"],  # TrainConfig and train.py's command line
    ["run"],  # one model's run
    ["ensemble"],
    ["train"],
    ["evaluate"],
    ["inference"],
    ["predict", "export", "serve", "explain", "explore"],
    ["cli"],  # the `vitaudio` command: every stage's main()
]


def stage_of() -> dict[str, int]:
    stages = {name: -1 for name in LEAVES}
    stages.update({name: i for i, stage in enumerate(STAGES) for name in stage})
    return stages


def vitaudio_imports(path: Path) -> set[str]:
    """The vitaudio modules a file imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                names.update(alias.name for alias in node.names if alias.name != "__version__")
            elif node.module and node.module.startswith("vitaudio."):
                names.add(node.module.split(".")[1])
    return names


def test_every_module_has_a_place_in_the_stage_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(stage_of()), f"place new modules in STAGES: {sorted(modules ^ set(stage_of()))}"


def violations(package: Path) -> list[str]:
    """Every import in `package` of a module of the same or a later stage."""
    stages, wrong = stage_of(), []
    for path in sorted(package.glob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue
        for imported in sorted(vitaudio_imports(path)):
            if stages[imported] >= stages[path.stem]:
                wrong.append(f"{path.stem} (stage {stages[path.stem]}) imports {imported} (stage {stages[imported]})")
    return wrong


def test_modules_import_only_upstream_modules():
    wrong = violations(PACKAGE)
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_check_catches_downstream_and_lateral_imports_even_inside_functions(tmp_path):
    (tmp_path / "data.py").write_text("from .model import ViT\n\ndef f():\n    from .inference import pipeline\n")
    (tmp_path / "predict.py").write_text("from . import serve\nfrom vitaudio.audio import load_audio\n")
    (tmp_path / "files.py").write_text("from .errors import VitaudioError\n")
    stage = stage_of()
    data, inference, model, predict = stage["data"], stage["inference"], stage["model"], stage["predict"]
    assert violations(tmp_path) == [f"data (stage {data}) imports inference (stage {inference})",
                                    f"data (stage {data}) imports model (stage {model})",
                                    "files (stage -1) imports errors (stage -1)",
                                    f"predict (stage {predict}) imports serve (stage {predict})"]
