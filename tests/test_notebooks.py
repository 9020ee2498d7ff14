"""The notebooks run clean, top to bottom, against tiny runs and data sets made here (class folders and manifests,
a classifier and a tagger); in git they carry no outputs."""
import csv
from collections import Counter
from pathlib import Path

import pytest
from test_multilabel import write_mixtures

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PARAMETERS = {"01_data.ipynb": "DATA_ROOT", "02_results.ipynb": "RUN_DIR"}


def execute(name: str, value: Path, cwd: Path):
    """Run a notebook with its first cell replaced by `PARAMETER = "value"`, in `cwd`; raise on any cell error."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    first.source = f"{PARAMETERS[name]} = {str(value)!r}"
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def outputs(notebook, kind: str) -> list[str]:
    """The `kind` outputs (e.g. "image/png", "text/markdown") of every cell, and the printed text for "stream"."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


def assert_no_warnings_or_progress_bars(notebook) -> None:
    """What a reader sees: no library warnings (tqdm's "IProgress not found", ...) and no progress bars."""
    for text in outputs(notebook, "stream"):
        assert "Warning" not in text and "clip/s" not in text and "it/s" not in text, text


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_notebook_is_committed_without_outputs_and_starts_with_its_one_parameter(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)
    assert notebook.cells[0] is code_cells[0]
    assert code_cells[0].source.startswith(f"{PARAMETERS[name]} = ") and "\n" not in code_cells[0].source


def test_data_notebook_runs_clean_and_shows_balance_durations_mels_and_failures(tiny_run, tmp_path):
    notebook = execute("01_data.ipynb", tiny_run.parent / "audio", tmp_path)
    assert len(outputs(notebook, "image/png")) == 3  # class balance, durations, example mels
    tables = outputs(notebook, "text/markdown")
    assert "| bass | 10 | 1 |" in tables[0]  # summary: 10 clips and 1 failed file
    assert "bass/broken.wav" in tables[-1]  # melify's failure, with its reason
    assert_no_warnings_or_progress_bars(notebook)


def test_results_notebook_runs_clean_and_shows_every_section(tiny_run, tmp_path):
    notebook = execute("02_results.ipynb", tiny_run, tmp_path)
    # curves, per-class bars, confusion matrix, misclassified mels, attention rollout, embeddings
    assert len(outputs(notebook, "image/png")) == 6
    report, pairs = outputs(notebook, "text/markdown")
    assert "| macro F1 |" in report and ("| predicted as |" in pairs or "no mistakes" in pairs)
    assert any("test clips misclassified" in text for text in outputs(notebook, "stream"))
    assert_no_warnings_or_progress_bars(notebook)


def test_data_notebook_counts_a_manifests_clips_under_each_of_their_labels(tmp_path):
    manifest = write_mixtures(tmp_path / "set", n_clips=12)
    with open(manifest, newline="") as file:
        counts = Counter(label for row in csv.DictReader(file) for label in row["label"].split(";"))
    notebook = execute("01_data.ipynb", manifest, tmp_path)
    assert len(outputs(notebook, "image/png")) == 3  # class balance, durations, example mels
    summary = outputs(notebook, "text/markdown")[0]
    assert all(f"| {label} | {count} | 0 |" in summary for label, count in counts.items())
    assert "| all | 12 | 0 |" in summary  # a clip of two labels counts for each, and once in all
    assert any("labels: the manifest's" in text for text in outputs(notebook, "stream"))
    assert_no_warnings_or_progress_bars(notebook)


def test_results_notebook_runs_clean_for_a_tagger_and_shows_its_sections(tiny_tagger, tmp_path):
    notebook = execute("02_results.ipynb", tiny_tagger, tmp_path)
    # curves with val mAP, per-class bars, per-class AP, clips with wrong tags, attention rollout, embeddings
    assert len(outputs(notebook, "image/png")) == 6
    report, errors = outputs(notebook, "text/markdown")
    assert "| mAP |" in report and "| exact match |" in report and "| threshold |" in report
    assert "| missed | false tags |" in errors or "no wrong tags" in errors
    printed = outputs(notebook, "stream")
    assert any("tagger" in text for text in printed) and any("test clips with wrong tags" in text for text in printed)
    assert_no_warnings_or_progress_bars(notebook)
