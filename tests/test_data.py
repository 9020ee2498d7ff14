from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitaudio.data import (
    MelClips,
    Segmented,
    SegmentRule,
    Standardize,
    TrainAugment,
    collate_images,
    collate_segments,
    cut_segments,
    mel_stats,
    train_batches,
)
from vitaudio.features import PNG_DB_STEP, band_stats, png_to_db, read_mel_png, write_mel_png


@pytest.fixture
def mel_root(tmp_path):
    """Two classes of PNG mels of different lengths; values are a function of (band, frame)."""
    for label in ("b_high", "a_low"):
        for i, n_frames in enumerate((50, 130)):
            band = np.arange(32, dtype=np.float32)[:, None]
            mel_db = -80 + band + np.zeros((32, n_frames), np.float32) + (10 if label == "b_high" else 0)
            (tmp_path / label).mkdir(exist_ok=True)
            write_mel_png(tmp_path / label / f"{label}.{i}.png", mel_db)
    (tmp_path / "a_low/.hidden.png").write_bytes(b"x")
    return tmp_path


def test_dataset_reads_pngs_as_db_with_lowest_band_first(mel_root):
    clips = MelClips(mel_root)
    assert clips.classes == ["a_low", "b_high"]
    assert clips.keys == ["a_low/a_low.0", "a_low/a_low.1", "b_high/b_high.0", "b_high/b_high.1"]
    mel_db, label = clips[3]
    assert mel_db.shape == (1, 32, 130) and mel_db.dtype == torch.float32 and label == 1
    assert abs(float(mel_db[0, 0, 0]) - (-70.0)) <= PNG_DB_STEP and abs(float(mel_db[0, 31, 5]) + 39) <= PNG_DB_STEP


def test_dataset_keeps_only_the_split_and_all_classes(mel_root):
    clips = MelClips(mel_root, keys=["b_high/b_high.1"])
    assert len(clips) == 1 and clips.classes == ["a_low", "b_high"] and clips[0][1] == 1


def test_stored_clips_match_the_pngs_and_decode_none_once_the_store_is_built(mel_root, monkeypatch):
    import vitaudio.data
    import vitaudio.store

    from_pngs = [mel_db for mel_db, _ in MelClips(mel_root)]
    MelClips(mel_root, stored=True)  # builds mel_root/.store from the PNGs

    def no_decoding(path):
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(vitaudio.data, "read_png16", no_decoding)
    monkeypatch.setattr(vitaudio.store, "read_png16", no_decoding)  # nor a needless rebuild
    monkeypatch.setattr(vitaudio.data, "read_mel_png", no_decoding)
    stored = MelClips(mel_root, stored=True)
    assert stored.classes == ["a_low", "b_high"] and len(stored) == 4  # the store is no class, nor a clip
    assert all(torch.equal(stored[i][0], from_pngs[i]) for i in range(len(stored)))
    assert isinstance(stored.store.image("a_low/a_low.1.png"), np.memmap)  # a view of the file, not a copy


def test_the_store_is_rebuilt_when_a_png_changes_and_the_old_one_kept_for_trainings_still_reading_it(mel_root):
    import os

    from vitaudio.store import STALE_AFTER_S

    old = MelClips(mel_root, stored=True)
    old_files = sorted((mel_root / ".store").iterdir())
    write_mel_png(mel_root / "a_low/a_low.0.png", np.full((32, 50), -20.0, np.float32))  # melify rewrote it
    os.utime(mel_root / "a_low/a_low.0.png", ns=(1, 1))  # an mtime no earlier run can share
    stored = MelClips(mel_root, stored=True)
    assert float(stored[0][0].mean()) == pytest.approx(-20.0, abs=PNG_DB_STEP)
    assert len(list((mel_root / ".store").iterdir())) == 4
    assert float(old[0][0].mean()) < -40  # a training that began before goes on with its own store
    for path in old_files:  # a day later
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - STALE_AFTER_S - 1))
    write_mel_png(mel_root / "a_low/a_low.1.png", np.full((32, 130), -30.0, np.float32))
    MelClips(mel_root, stored=True)
    assert not any(path.exists() for path in old_files) and len(list((mel_root / ".store").iterdir())) == 4


def test_loader_workers_map_the_store_rather_than_receive_a_copy(mel_root):
    import pickle

    stored = MelClips(mel_root, stored=True)
    stored[0]  # maps the values in this process
    assert stored.store._values is not None and len(pickle.dumps(stored.store)) < 2000  # names, not values
    loader = torch.utils.data.DataLoader(stored, batch_size=None, num_workers=2)
    assert all(torch.equal(a, b[0]) for (a, _), b in zip(loader, MelClips(mel_root)))


def test_where_the_store_cannot_be_written_each_png_is_decoded_once(mel_root, capsys):
    (mel_root / ".store").write_text("a file where the store's folder would go")
    stored = MelClips(mel_root, stored=True)
    assert stored.store is None and "cannot write a store" in capsys.readouterr().err
    from_pngs = [mel_db for mel_db, _ in MelClips(mel_root)]
    assert all(torch.equal(stored[i][0], from_pngs[i]) for i in range(len(stored)))
    for path, _ in stored.samples:
        Path(path).write_bytes(b"not a png any more")  # a second read would fail
    assert all(torch.equal(stored[i][0], from_pngs[i]) for i in range(len(stored)))


def test_segments_cover_the_whole_clip_last_one_end_aligned():
    rule = SegmentRule(frames=40, hop_frames=40)
    assert rule.starts(100) == [0, 40, 60] and rule.starts(120) == [0, 40, 80] and rule.starts(30) == [0]
    mel_db = torch.arange(100, dtype=torch.float32).expand(1, 8, 100)
    segments = cut_segments(mel_db, rule)
    assert segments.shape == (3, 1, 8, 40)
    assert float(segments[-1, 0, 0, -1]) == 99  # the tail is covered


def test_segmented_dataset_and_collate_keep_clip_membership(mel_root):
    rule = SegmentRule(frames=48, hop_frames=48)
    dataset = Segmented(MelClips(mel_root), rule, Standardize(mean=-60.0, std=10.0))
    segments, contexts, clip_index, labels = collate_segments([dataset[0], dataset[3]])
    assert segments.shape == (2 + 3, 1, 32, 48)  # 50 frames -> starts [0, 2]; 130 frames -> [0, 48, 82]
    assert clip_index.tolist() == [0, 0, 1, 1, 1] and labels.tolist() == [0, 1]
    assert float(segments[0, 0, 0, 0]) == pytest.approx((-80 + 60) / 10, abs=1e-3)  # standardised
    # every segment carries its whole clip's band stats: mean per band, then std per band, of the standardised clip
    whole = (dataset.clips[3][0] - -60.0) / 10.0  # (1, 32, 130)
    expected = torch.cat([whole.mean(dim=-1)[0], whole.std(dim=-1, unbiased=False)[0]])
    assert contexts.shape == (5, 64)
    torch.testing.assert_close(contexts[2:], expected.expand(3, -1))
    assert not torch.equal(contexts[0], contexts[2])


def test_mel_stats_are_mean_and_std_of_all_values(mel_root):
    clips = MelClips(mel_root)
    stats = mel_stats(clips)
    values = np.concatenate([read_mel_png(p).ravel() for p, _ in clips.samples])
    assert stats.mean == pytest.approx(values.mean(), abs=1e-3) and stats.std == pytest.approx(values.std(), abs=1e-3)


def augment_one(augment: TrainAugment, mel_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip's dB mel (1, M, T) through the batch augmentation -> (crop (1, M, frames), context (2M,))."""
    crops, contexts = augment(mel_db, torch.tensor([mel_db.shape[-1]]))
    return crops[0], contexts[0]


def test_training_inputs_are_standardised_crops_masked_with_zero_and_the_context_of_the_clip():
    torch.manual_seed(0)
    crops, contexts = TrainAugment(64, Standardize(mean=-50.0, std=10.0))(torch.full((8, 32, 300), -40.0),
                                                                           torch.full((8,), 300))
    assert crops.shape == (8, 1, 32, 64) and float(crops.max()) == 1.0  # (-40 + 50) / 10
    assert set(crops.unique().tolist()) == {0.0, 1.0}  # SpecAugment masks are 0, the mean
    torch.testing.assert_close(contexts, torch.cat([torch.ones(32), torch.zeros(32)]).expand(8, -1))  # unmasked


def test_train_context_is_band_stats_of_a_stretch_of_the_clip_at_least_one_crop_long():
    torch.manual_seed(0)
    clips = torch.arange(300, dtype=torch.float32).expand(400, 4, 300)  # each frame's value is its index
    contexts = TrainAugment(50, Standardize(mean=0.0, std=1.0))(clips, torch.full((400,), 300))[1]
    means, stds = contexts[:, 0], contexts[:, 4]  # band 0's mean = the stretch's middle frame
    lengths = (stds**2 * 12 + 1).sqrt().round()  # the std of n consecutive integers is sqrt((n^2 - 1) / 12)
    assert lengths.min() >= 50 and lengths.max() <= 300 and lengths.max() - lengths.min() > 150  # varied
    assert (means - (lengths - 1) / 2 >= -1e-3).all() and (means + (lengths - 1) / 2 <= 299 + 1e-3).all()  # inside
    assert max(means) - min(means) > 100  # the stretch moves: the model learns to use partial context
    same_length = lengths == lengths.mode().values  # clips of one stretch length: each its own start
    assert len(means[same_length].unique()) > 1


def test_a_batch_of_clips_of_several_lengths_is_augmented_clip_by_clip():
    torch.manual_seed(0)
    long = torch.arange(200.0).expand(1, 8, 200)  # value = frame index
    short = torch.full((1, 8, 200), -1000.0)  # only its first 30 frames are the clip: the rest is the batch's padding
    short[..., :30] = torch.linspace(-5, -1, 30)
    augment = TrainAugment(40, Standardize(0.0, 1.0), masks=0)
    for _ in range(50):
        crops, contexts = augment(torch.cat([long, short]), torch.tensor([200, 30]))
        assert (crops[0].diff(dim=-1) == 1).all()  # a window of the long clip, contiguous
        assert float(crops[1].max()) <= -1 and float(crops[1].min()) == -5  # the short one padded with its lowest
        assert float(contexts[1, :8].max()) < -1  # its context never sees the padding either


def test_crop_positions_and_mask_widths_are_drawn_uniformly():
    torch.manual_seed(0)
    n_clips, frames, n_frames = 4000, 20, 60
    clips = torch.arange(float(n_frames)).expand(n_clips, 4, n_frames)
    crops = TrainAugment(frames, Standardize(0.0, 1.0), masks=0)(clips, torch.full((n_clips,), n_frames))[0]
    starts = torch.bincount(crops[:, 0, 0, 0].long(), minlength=n_frames - frames + 1)
    expected = n_clips / (n_frames - frames + 1)  # 41 starts, ~98 each
    assert len(starts) == n_frames - frames + 1 and (starts - expected).abs().max() < 4.5 * expected**0.5
    masked = TrainAugment(frames, Standardize(0.0, 1.0), masks=1, mask_width=0.5)(
        clips + 1, torch.full((n_clips,), n_frames))[0][:, 0]  # no value is 0 but a mask's
    for masked_lines, size in (((masked == 0).all(dim=-1), 4), ((masked == 0).all(dim=-2), frames)):  # (B, size)
        counts = torch.bincount(masked_lines.sum(dim=-1), minlength=size // 2 + 1)  # a width in [0, size / 2]...
        expected = n_clips / (size // 2 + 1)
        assert len(counts) == size // 2 + 1 and (counts - expected).abs().max() < 4.5 * expected**0.5  # ...each alike
        assert masked_lines[:, 0].any() and masked_lines[:, -1].any()  # anywhere along the axis, ends included


def test_band_shift_moves_the_crop_along_the_mel_axis_within_its_range():
    mel_db = torch.full((300, 40, 50), -80.0)
    mel_db[:, 20] = 0.0  # one loud band
    crops = TrainAugment(50, Standardize(0.0, 1.0), band_shift=0.1, masks=0)(mel_db, torch.full((300,), 50))[0]
    assert set(crops[:, 0].mean(dim=-1).argmax(dim=-1).tolist()) == set(range(16, 25))  # up to 4 bands either way
    assert (crops.amin(dim=(1, 2, 3)) == -80).all()  # the bands left empty hold the crop's lowest value


def test_time_stretch_resamples_windows_of_other_lengths_to_the_segment_as_interpolate_does():
    clips = torch.randn(300, 8, 400)
    augment = TrainAugment(100, Standardize(0.0, 1.0), time_stretch=0.25, masks=0)
    torch.manual_seed(0)
    drawn = augment.draw(torch.full((300,), 400), 8)
    torch.manual_seed(0)  # the same draws again
    crops = augment(clips, torch.full((300,), 400))[0]
    assert crops.shape == (300, 1, 8, 100)
    windows = drawn["window"]
    assert 80 <= windows.min() < 90 and 110 < windows.max() <= 125  # frames x [1 / 1.25, 1.25]
    for i in range(0, 300, 7):
        start, window = int(drawn["crop_start"][i]), int(windows[i])
        expected = F.interpolate(clips[i:i + 1, :, start:start + window], size=100, mode="linear", align_corners=False)
        torch.testing.assert_close(crops[i], expected, atol=1e-4, rtol=0)


def test_clips_no_longer_than_a_segment_are_rolled_in_time_and_longer_ones_only_cropped():
    augment = TrainAugment(40, Standardize(0.0, 1.0), masks=0)
    word = torch.full((400, 8, 40), -80.0)
    word[..., 20] = 0.0  # one loud frame in the middle of a one-segment clip
    crops = augment(word, torch.full((400,), 40))[0]
    assert set(crops[:, 0, 0].argmax(dim=-1).tolist()) == set(range(10, 31))  # by up to a quarter either way
    song = augment(torch.arange(400.0).expand(1, 8, 400), torch.tensor([400]))[0][0, 0, 0]
    assert torch.equal(song, song[0] + torch.arange(40.0))  # a crop of a longer clip is contiguous, not rolled


def test_gain_raises_or_lowers_a_whole_training_clip_and_its_context_alike():
    mel_db = torch.linspace(-60, -10, 8 * 30).view(1, 8, 30)
    plain = TrainAugment(40, Standardize(mean=-30.0, std=10.0), masks=0)
    louder = TrainAugment(40, Standardize(mean=-30.0, std=10.0), gain_db=12.0, masks=0)
    offsets = []
    for seed in range(20):
        torch.manual_seed(seed)
        crop, context = augment_one(plain, mel_db)
        torch.manual_seed(seed)  # the same crop and roll: the gain is drawn after them
        gained_crop, gained_context = augment_one(louder, mel_db)
        offset = float((gained_crop - crop).mean())
        torch.testing.assert_close(gained_crop, crop + offset)  # one offset for the whole crop...
        torch.testing.assert_close(gained_context, context + torch.tensor([offset] * 8 + [0.0] * 8))  # its means
        offsets.append(offset)
    assert max(map(abs, offsets)) <= 1.2 and max(offsets) - min(offsets) > 1.0  # up to 12 dB / std 10, varied


def test_mel_range_narrows_the_bands_at_either_end_and_stretches_them_back_as_interpolate_does():
    clips = torch.randn(200, 16, 5)
    augment = TrainAugment(5, Standardize(0.0, 1.0), band_crop=0.25, masks=0)
    torch.manual_seed(0)
    drawn = augment.draw(torch.full((200,), 5), 16)
    torch.manual_seed(0)
    ranged = augment(clips, torch.full((200,), 5))[0][:, 0]  # (B, 16, 5)
    low, kept = drawn["low"], drawn["kept"]
    assert low.min() == 0 and low.max() == 4 and (16 - low - kept).min() == 0 and (16 - low - kept).max() == 4
    for i in range(200):
        rolled = clips[i].roll(int(drawn["roll"][i]), dims=-1)  # a clip of one segment is rolled in time first
        bands = rolled[int(low[i]):int(low[i] + kept[i])]  # (kept, 5)
        expected = F.interpolate(bands[None, None], size=(16, 5), mode="bilinear", align_corners=True)[0, 0]
        torch.testing.assert_close(ranged[i], expected, atol=1e-5, rtol=0)
    assert TrainAugment(5, Standardize(0.0, 1.0)).mel_range(clips, low, kept) is clips  # off by default


def test_training_batches_pad_images_and_come_augmented_in_loader_order(mel_root):
    clips = MelClips(mel_root, stored=True, images=True)
    image, label = clips[0]
    assert image.dtype == np.uint16 and image.shape == (32, 50) and label == 0  # as stored, 2 bytes a value
    images, n_frames, targets = collate_images([clips[0], clips[3]])
    assert images.shape == (2, 32, 130) and n_frames.tolist() == [50, 130] and targets.tolist() == [0, 1]
    assert not images[0, :, 50:].any()  # the shorter image padded with zeros; n_frames says where it ends
    standardize = Standardize(mean=-60.0, std=10.0)
    batches = train_batches(clips, TrainAugment(48, standardize, masks=0), torch.device("cpu"), batch_size=4)
    assert len(batches) == 1
    (crops, contexts), labels = next(iter(batches))
    assert crops.shape == (4, 1, 32, 48) and contexts.shape == (4, 64) and labels.tolist() == [0, 0, 1, 1]
    whole = (MelClips(mel_root)[3][0] - -60.0) / 10.0  # (1, 32, 130) standardised, lowest band first
    assert float(crops[3, 0, 0].max()) == pytest.approx(float(whole[0, 0].max()), abs=1e-3)  # band 0 is the lowest
    assert float(crops[3, 0, 31].min()) == pytest.approx(float(whole[0, 31].min()), abs=1e-3)


def test_training_batches_are_the_same_with_loader_workers_or_without(mel_root):
    clips = MelClips(mel_root, stored=True, images=True)
    augment = TrainAugment(48, Standardize(mean=-60.0, std=10.0), gain_db=6.0, time_stretch=0.2)
    epochs = []
    for workers in (0, 1):
        torch.manual_seed(0)
        batches = train_batches(clips, augment, torch.device("cpu"), batch_size=2, shuffle=True, num_workers=workers)
        epochs.append([(crops, contexts, labels) for (crops, contexts), labels in batches])
    for (crops, contexts, labels), (crops_w, contexts_w, labels_w) in zip(*epochs):
        assert torch.equal(crops, crops_w) and torch.equal(contexts, contexts_w) and torch.equal(labels, labels_w)


def test_png_images_read_alike_as_numpy_and_as_torch_batches():
    images = np.random.default_rng(0).integers(0, 65536, (3, 8, 20)).astype(np.uint16)
    assert np.array_equal(png_to_db(images), png_to_db(torch.from_numpy(images)).numpy())
    assert np.array_equal(png_to_db(images[1]), png_to_db(images)[1])


def test_masked_band_stats_are_those_of_the_frames_kept_and_of_the_whole_clip_with_all():
    mel = torch.randn(4, 1, 8, 50) * 3 + 2
    kept = torch.rand(4, 50) > 0.4
    expected = torch.stack([band_stats(mel[i:i + 1][..., kept[i]])[0] for i in range(4)])
    torch.testing.assert_close(band_stats(mel, frame_mask=kept), expected)
    torch.testing.assert_close(band_stats(mel, frame_mask=torch.ones(4, 50, dtype=torch.bool)), band_stats(mel))


def test_augmentation_makes_every_tensor_on_the_batch_device():
    augment = TrainAugment(40, Standardize(0.0, 1.0), band_shift=0.1, time_stretch=0.2, gain_db=6.0, band_crop=0.1)
    crops, contexts = augment(torch.empty(4, 16, 60, device="meta"), torch.tensor([60, 30, 45, 60]))
    assert crops.device.type == contexts.device.type == "meta" and crops.shape == (4, 1, 16, 40)
