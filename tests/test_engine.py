"""engine.fit: the one epoch loop every model trains with (ViT members and the benchmark's other contenders)."""
import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from vitaudio.data import collate_segments
from vitaudio.engine import (
    HIGHEST_VAL_ACCURACY,
    LOWEST_VAL_LOSS,
    LoopConfig,
    Schedule,
    fit,
    train_one_epoch,
    warmup_then_cosine,
    warmup_then_plateau,
)
from vitaudio.errors import RunDirError
from vitaudio.rundir import read_metrics


class Linear(nn.Module):
    """Any module from (segments (B, 1, M, T), context (B, 2M)) to logits trains through fit."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, mel, context):
        return self.fc(mel.mean(dim=(1, 3)))  # (B, 1, 4, T) -> (B, 4) -> (B, 2)


def loaders(seed: int = 0):
    """Two separable classes: the sign of the mel's mean."""
    generator = torch.Generator().manual_seed(seed)
    mels = torch.randn(64, 1, 4, 8, generator=generator)
    labels = (mels.mean(dim=(1, 2, 3)) > 0).long()
    context = torch.zeros(8)
    train = DataLoader([((mel, context), int(y)) for mel, y in zip(mels[:48], labels[:48])], batch_size=8,
                       shuffle=True)
    val = DataLoader([(mel[None], context, int(y)) for mel, y in zip(mels[48:], labels[48:])], batch_size=4,
                     collate_fn=collate_segments)
    return train, val


def make(criterion=LOWEST_VAL_LOSS, warmup_epochs=1, cosine_epochs=0):
    torch.manual_seed(0)
    model = Linear()
    train, val = loaders()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    schedule = (warmup_then_cosine(optimizer, steps_per_epoch=len(train), warmup_epochs=warmup_epochs,
                                   epochs=cosine_epochs) if cosine_epochs else
                warmup_then_plateau(optimizer, steps_per_epoch=len(train), warmup_epochs=warmup_epochs,
                                    criterion=criterion, factor=0.5, patience=1))
    return model, train, val, optimizer, schedule


def test_fit_trains_any_module_and_leaves_it_with_the_best_epochs_weights():
    model, train, val, optimizer, schedule = make()
    records, weights = [], {}

    def on_epoch(record):
        records.append(record)
        weights[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = fit(model, train, val, optimizer, schedule, LoopConfig(epochs=6, patience=10), device=torch.device("cpu"),
                 on_epoch=on_epoch, log=False)
    assert [r["epoch"] for r in records] == list(range(1, 7)) and result.last_epoch == 6
    assert result.best_epoch == min(records, key=lambda r: r["val_loss"])["epoch"]
    assert records[-1]["val_acc"] > 0.8  # it learned
    assert all(torch.equal(v, weights[result.best_epoch][k]) for k, v in model.state_dict().items())


def test_fit_asks_the_stop_hook_before_every_epoch_and_stops_when_it_says_so():
    model, train, val, optimizer, schedule = make()
    asked = []
    result = fit(model, train, val, optimizer, schedule, LoopConfig(epochs=10, patience=10),
                 device=torch.device("cpu"), stop=lambda epoch: asked.append(epoch) or epoch > 3, log=False)
    assert asked == [1, 2, 3, 4] and result.last_epoch == 3 and result.stopped_by == "stop hook"


def test_fit_stops_early_after_patience_epochs_without_a_better_score():
    model, train, val, optimizer, schedule = make()
    optimizer.param_groups[0]["lr"] = 0.0  # nothing changes, so nothing improves after epoch 1
    schedule.per_step = None
    result = fit(model, train, val, optimizer, schedule, LoopConfig(epochs=20, patience=3),
                 device=torch.device("cpu"), log=False)
    assert (result.best_epoch, result.last_epoch, result.stopped_by) == (1, 4, "early stop")


def test_highest_accuracy_criterion_watches_accuracy_and_breaks_ties_by_loss():
    model, train, val, optimizer, schedule = make(HIGHEST_VAL_ACCURACY, warmup_epochs=0)
    records = []
    result = fit(model, train, val, optimizer, Schedule(schedule.plateau), LoopConfig(
        epochs=5, patience=10, criterion=HIGHEST_VAL_ACCURACY), device=torch.device("cpu"),
        on_epoch=records.append, log=False)
    assert schedule.plateau.mode == "max"
    best = max(records, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert result.best_epoch == best["epoch"]


@pytest.mark.parametrize("ema_epochs, cosine_epochs", [(0.0, 0), (2.0, 0), (0.0, 4)])
def test_fit_with_a_run_dir_resumes_exactly_where_it_stopped(tmp_path, ema_epochs, cosine_epochs):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    for run_dir in (straight, interrupted):
        run_dir.mkdir()
    model, train, val, optimizer, schedule = make(cosine_epochs=cosine_epochs)
    fit(model, train, val, optimizer, schedule, LoopConfig(epochs=4, patience=10, ema_epochs=ema_epochs),
        device=torch.device("cpu"), run_dir=straight, log=False)
    model, train, val, optimizer, schedule = make(cosine_epochs=cosine_epochs)
    fit(model, train, val, optimizer, schedule, LoopConfig(epochs=2, patience=10, ema_epochs=ema_epochs),
        device=torch.device("cpu"), run_dir=interrupted, log=False)
    with open(interrupted / "metrics.jsonl", "a") as file:  # killed after this line, before last.pt was written
        file.write(json.dumps({"epoch": 3, "val_loss": 0.0}) + "\n")
    model, train, val, optimizer, schedule = make(cosine_epochs=cosine_epochs)
    fit(model, train, val, optimizer, schedule, LoopConfig(epochs=4, patience=10, ema_epochs=ema_epochs),
        device=torch.device("cpu"), run_dir=interrupted, resume=True, log=False)
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(straight)]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(interrupted)]


def test_with_a_moving_average_the_average_is_scored_kept_and_left_in_the_model(tmp_path):
    from vitaudio.checkpoint import load_checkpoint

    model, train, val, optimizer, schedule = make()
    trained = []
    result = fit(model, train, val, optimizer, schedule, LoopConfig(epochs=3, patience=10, ema_epochs=1.0),
                 device=torch.device("cpu"), run_dir=tmp_path, log=False,
                 on_epoch=lambda record: trained.append(model.fc.weight.detach().clone()))
    best, last = (load_checkpoint(tmp_path / name, required=()) for name in ("best.pt", "last.pt"))
    assert best["epoch"] == result.best_epoch and torch.equal(model.fc.weight, best["model"]["fc.weight"])
    assert torch.equal(last["model"]["fc.weight"], trained[-1])  # last.pt goes on from the trained weights
    assert not torch.equal(best["model"]["fc.weight"], trained[result.best_epoch - 1])  # best.pt: their average
    assert torch.equal(last["averaged"]["module.fc.weight"], model.fc.weight) == (result.best_epoch == 3)


def test_the_cosine_schedule_warms_up_then_decays_to_a_hundredth_of_the_lr_at_the_last_step():
    optimizer = torch.optim.AdamW(Linear().parameters(), lr=1.0)
    schedule = warmup_then_cosine(optimizer, steps_per_epoch=10, warmup_epochs=2, epochs=12)
    lrs = []
    for _ in range(12 * 10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.per_step.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[20] == pytest.approx(1.0)  # warm-up over 2 x 10 steps
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21]))  # rising through the warm-up,
    assert all(a > b for a, b in zip(lrs[20:], lrs[21:]))  # falling after it,
    assert lrs[70] == pytest.approx(0.505)  # half-way down at the middle of the decay,
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # and lr / 100 after the last step
    assert schedule.plateau is None


def test_a_run_cannot_resume_under_another_kind_of_schedule(tmp_path):
    model, train, val, optimizer, schedule = make(cosine_epochs=3)
    fit(model, train, val, optimizer, schedule, LoopConfig(epochs=2, patience=10), device=torch.device("cpu"),
        run_dir=tmp_path, log=False)
    model, train, val, optimizer, schedule = make()
    with pytest.raises(RunDirError, match="was a decay over its epochs, this recipe's is ReduceLROnPlateau"):
        fit(model, train, val, optimizer, schedule, LoopConfig(epochs=3, patience=10), device=torch.device("cpu"),
            run_dir=tmp_path, resume=True, log=False)


def test_criterion_names_are_checked():
    from vitaudio.engine import Criterion

    with pytest.raises(ValueError, match="'loss' or 'accuracy'"):
        Criterion("f1")


def test_last_pt_of_an_earlier_format_without_best_score_resumes(tmp_path):
    from vitaudio.checkpoint import load_checkpoint, save_checkpoint

    model, train, val, optimizer, schedule = make()
    fit(model, train, val, optimizer, schedule, LoopConfig(epochs=2, patience=10), device=torch.device("cpu"),
        run_dir=tmp_path, log=False)
    last = load_checkpoint(tmp_path / "last.pt", required=())
    del last["best_score"]  # checkpoints before the criterion was an argument kept only the best val loss
    save_checkpoint(tmp_path / "last.pt", last)
    model, train, val, optimizer, schedule = make()
    result = fit(model, train, val, optimizer, schedule, LoopConfig(epochs=3, patience=10),
                 device=torch.device("cpu"), run_dir=tmp_path, resume=True, log=False)
    assert result.last_epoch == 3 and [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]


def test_with_a_teacher_and_full_distillation_the_student_learns_the_teachers_answers():
    teacher = Linear()
    with torch.no_grad():  # a teacher that answers the opposite of the labels
        teacher.fc.weight.copy_(torch.tensor([[5.0] * 4, [-5.0] * 4]))
        teacher.fc.bias.zero_()
    accuracies = {}
    for distill in (0.0, 1.0):
        model, train, val, optimizer, schedule = make()
        records = []
        fit(model, train, val, optimizer, schedule, LoopConfig(epochs=6, patience=10, distill=distill),
            device=torch.device("cpu"), teacher=teacher, log=False, on_epoch=records.append)
        accuracies[distill] = records[-1]["val_acc"]
    assert accuracies[0.0] > 0.8 and accuracies[1.0] < 0.2


def test_the_time_left_is_to_early_stopping_unless_val_improves_and_never_past_the_last_epoch():
    from vitaudio.engine import time_left

    loop = LoopConfig(epochs=100, patience=20)
    assert time_left(30, 25, loop, 6.0) == "  ends by epoch 45 (~1:30) unless val improves"
    assert time_left(90, 85, loop, 6.0) == "  ends by epoch 100 (~1:00)"
    assert time_left(100, 100, loop, 6.0) == ""


def test_unlabelled_samples_learn_from_the_teacher_alone():
    from vitaudio.data import NO_LABEL
    from vitaudio.engine import labels_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    labelled_only = labels_loss(logits[:2], torch.tensor([0, 1]), 0.0)
    torch.testing.assert_close(labels_loss(logits, torch.tensor([0, 1, NO_LABEL]), 0.0), labelled_only)
    assert labels_loss(logits, torch.full((3,), NO_LABEL), 0.1) == 0  # a batch of unlabelled clips: no label loss

    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)

    class Model(torch.nn.Module):  # (mel, context) -> logits, as the loop calls models
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, mel, context):
            return self.linear(mel.flatten(1))

    mels = torch.randn(8, 1, 2, 2)
    loader = [((mels, torch.zeros(8, 4)), torch.full((8,), NO_LABEL))]
    stats = train_one_epoch(Model(student), loader, torch.optim.SGD(student.parameters(), lr=0.0),
                            device=torch.device("cpu"), teacher=Model(teacher), distill=0.5, temperature=2.0,
                            progress=False)
    with torch.no_grad():
        expected = 0.5 * 4 * torch.nn.functional.kl_div((student(mels.flatten(1)) / 2).log_softmax(1),
                                                        (teacher(mels.flatten(1)) / 2).softmax(1),
                                                        reduction="batchmean")
    assert stats.loss == pytest.approx(float(expected), rel=1e-5) and stats.n_labelled == 0


def test_cut_mix_pastes_one_span_of_the_partner_along_time_or_mel():
    from vitaudio.engine import cut_mix

    torch.manual_seed(0)
    mel = torch.stack([torch.zeros(1, 8, 20), torch.ones(1, 8, 20)])  # (2, 1, 8, 20)
    seen_axes = set()
    for _ in range(20):
        mixed = cut_mix(mel, torch.tensor([1, 0]), 0.75)
        pasted = mixed[0, 0] == 1  # where sample 0 took sample 1's values
        assert torch.equal(mixed[1], 1 - mixed[0]) and torch.equal(mel[0], torch.zeros(1, 8, 20))  # not in place
        if pasted.all(dim=0).any():  # whole mel columns: a time span, a quarter of the time axis
            assert pasted.sum() == 8 * 5
            seen_axes.add("time")
        else:  # whole time rows: a band of a quarter of the mels
            assert pasted.all(dim=1).sum() == 2 and pasted.sum() == 2 * 20
            seen_axes.add("mel")
    assert seen_axes == {"time", "mel"}


def test_the_cosine_recipe_runs_every_epoch_and_a_resume_cannot_change_its_length(tmp_path):
    from dataclasses import asdict

    from vitaudio.config import TrainConfig, config_of_run
    from vitaudio.errors import ConfigError
    from vitaudio.run import loop_config, make_optimizer

    cosine = TrainConfig(schedule="cosine", epochs=40, patience=20)
    assert loop_config(cosine).patience >= 40 and loop_config(TrainConfig(patience=20)).patience == 20
    _, schedule = make_optimizer(Linear(), cosine, steps_per_epoch=5)
    assert schedule.plateau is None and schedule.per_step is not None
    (tmp_path / "config.json").write_text(json.dumps({"train": asdict(cosine)}))
    assert config_of_run(tmp_path).epochs == 40
    with pytest.raises(ConfigError, match="decays over its 40 epochs"):
        config_of_run(tmp_path, epochs=60)
