"""Specification of vitaudio.model: shapes, any-length inputs, errors, gradients, attention, presets, round trips."""

import json
from dataclasses import asdict

import pytest
import torch

from vitaudio.features import band_stats
from vitaudio.model import PRESETS, DropPath, ViT, ViTConfig, ViTEnsemble, build_model, sincos_pos_embed_2d, vit_config


def tiny_config(**overrides) -> ViTConfig:
    """A few-thousand-parameter model so the whole file runs in seconds on CPU."""
    fields = dict(n_mels=32, n_classes=5, patch_size=(8, 8), patch_stride=(8, 8), dim=32, depth=2, heads=2,
                  drop_path=0.0)
    return ViTConfig(**{**fields, **overrides})


def tiny_model(**overrides) -> ViT:
    torch.manual_seed(0)
    return ViT(tiny_config(**overrides)).eval()


def mel(batch: int, n_mels: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, n_mels, n_frames, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "n_mels, n_frames, patch_stride",
    [(128, 50, (16, 16)), (128, 431, (16, 16)), (64, 1000, (16, 16)), (128, 431, (16, 10)), (64, 100, (10, 6))],
)
def test_output_is_batch_by_classes_for_non_square_inputs(n_mels, n_frames, patch_stride):
    model = tiny_model(n_mels=n_mels, patch_size=(16, 16), patch_stride=patch_stride)
    logits = model(mel(3, n_mels, n_frames))
    assert logits.shape == (3, 5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("pool, n_prefix", [("mean", 0), ("cls", 1)])
def test_longer_inputs_than_training_crops_score_and_token_count_matches_grid_size(pool, n_prefix):
    model = tiny_model(pool=pool, patch_stride=(4, 6))
    for n_frames in (8, 64, 3000):
        n_freq, n_time = model.patch_embed.grid_size(n_frames)
        assert n_time == (n_frames - 8) // 6 + 1
        with torch.no_grad():
            tokens = model.forward_features(mel(2, 32, n_frames))
            logits = model.forward_head(tokens)
        assert tokens.shape == (2, n_prefix + n_freq * n_time, 32)
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()


@pytest.mark.parametrize("n_frames", [16, 17, 63, 431])
def test_conv_stem_keeps_the_patch_grid_and_grid_size_counts_its_tokens(n_frames):
    model = tiny_model(n_mels=64, patch_size=(16, 16), patch_stride=(16, 8), stem_channels=(8, 16))
    assert model.patch_embed.proj.kernel_size == (4, 4) and model.patch_embed.proj.stride == (4, 2)
    with torch.no_grad():
        tokens = model.forward_features(mel(2, 64, n_frames))
    n_freq, n_time = model.patch_embed.grid_size(n_frames)
    quarter = -(-n_frames // 4)  # the padded stride-2 convs round up: ceil(T / 4) columns reach the projection
    assert n_freq == 4 and n_time == (quarter - 4) // 2 + 1
    assert tokens.shape == (2, n_freq * n_time, 32)


def test_sincos_embedding_of_a_patch_does_not_change_when_the_clip_gets_longer():
    short = sincos_pos_embed_2d(32, (3, 10)).reshape(3, 10, 32)  # (F'*T', D) -> (F', T', D)
    long = sincos_pos_embed_2d(32, (3, 500)).reshape(3, 500, 32)  # (F'*T', D) -> (F', T', D)
    torch.testing.assert_close(long[:, :10], short)


def test_sincos_embeddings_are_distinct_per_patch_and_split_freq_and_time_channels():
    embed = sincos_pos_embed_2d(32, (4, 6)).reshape(4, 6, 32)  # (F'*T', D) -> (F', T', D)
    flat = embed.reshape(24, 32)  # (F', T', D) -> (N, D)
    assert torch.cdist(flat, flat).add(torch.eye(24)).min() > 1e-3
    # first half depends on the frequency index only, second half on the time index only
    torch.testing.assert_close(embed[:, :1, :16].expand(4, 6, 16), embed[:, :, :16])
    torch.testing.assert_close(embed[:1, :, 16:].expand(4, 6, 16), embed[:, :, 16:])


def test_model_follows_input_dtype_including_position_embeddings():
    model = tiny_model().to(torch.bfloat16)  # float32 embeddings would reach LayerNorm with bfloat16 weights and fail
    logits = model(mel(2, 32, 40).to(torch.bfloat16))
    assert logits.dtype == torch.bfloat16


def test_position_embeddings_make_the_model_sensitive_to_patch_order():
    model = tiny_model(pool="mean")  # without positions, mean pooling would be blind to the order of patches
    x = mel(2, 32, 40)
    swapped = torch.cat([x[..., 8:16], x[..., :8], x[..., 16:]], dim=-1)  # swap the first two time patches
    with torch.no_grad():
        assert (model(x) - model(swapped)).abs().max() > 1e-3


def test_wrong_height_raises_naming_both_heights():
    with pytest.raises(ValueError, match=r"Input height \(64\) doesn't match model n_mels \(32\)"):
        tiny_model()(mel(1, 64, 40))


def test_too_few_frames_raises_with_the_minimum():
    with pytest.raises(ValueError, match=r"7 frames.*at least 8"):
        tiny_model()(mel(1, 32, 7))


def test_two_channels_raise():
    with pytest.raises(ValueError, match=r"channels \(2\)"):
        tiny_model()(torch.randn(1, 2, 32, 40))


def test_three_dimensional_input_raises():
    with pytest.raises(ValueError, match=r"\(B, 1, n_mels, T\)"):
        tiny_model()(torch.randn(1, 32, 40))


@pytest.mark.parametrize("pool, clip_context", [("cls", False), ("mean", False), ("cls", True), ("mean", True)])
def test_every_parameter_gets_a_finite_nonzero_gradient(pool, clip_context):
    model = tiny_model(pool=pool, clip_context=clip_context).train()
    loss = torch.nn.functional.cross_entropy(model(mel(4, 32, 40)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_cls_token_exists_only_with_cls_pooling():
    assert tiny_model(pool="cls").cls_token.shape == (1, 1, 32)
    assert tiny_model(pool="mean").cls_token is None


def test_eval_is_deterministic():
    model = tiny_model(dropout=0.3, attn_dropout=0.3, drop_path=0.3)
    x = mel(2, 32, 40)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_train_mode_with_dropout_and_drop_path_is_stochastic():
    model = tiny_model(dropout=0.3, attn_dropout=0.3, drop_path=0.3).train()
    x = mel(2, 32, 40)
    first, second = model(x), model(x)
    assert torch.isfinite(first).all()
    assert not torch.equal(first, second)


def test_drop_path_rate_rises_linearly_over_blocks():
    model = tiny_model(depth=5, drop_path=0.2)
    rates = [block.drop_path.p for block in model.encoder.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_drop_path_drops_whole_samples_and_rescales_kept_ones():
    drop = DropPath(0.5).train()
    out = drop(torch.ones(1000, 3, 4))
    per_sample = out.flatten(1)  # (B, N, D) -> (B, N * D)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    assert torch.equal(drop.eval()(out), out)


@pytest.mark.parametrize("pool, clip_context, n_prefix", [("mean", False, 0), ("cls", False, 1), ("mean", True, 1),
                                                          ("cls", True, 2)])
def test_forward_attention_returns_row_stochastic_weights_per_block(pool, clip_context, n_prefix):
    model = tiny_model(pool=pool, depth=3, heads=4, clip_context=clip_context)
    assert model.num_prefix_tokens == n_prefix
    n_tokens = n_prefix + 4 * 5  # grid (32/8, 40/8)
    weights = model.forward_attention(mel(2, 32, 40))
    assert len(weights) == 3
    for block_weights in weights:
        assert block_weights.shape == (2, 4, n_tokens, n_tokens)
        torch.testing.assert_close(block_weights.sum(-1), torch.ones(2, 4, n_tokens))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_explicit_attention_path_gives_the_sdpa_logits(pool):
    model = tiny_model(pool=pool, patch_stride=(8, 5))
    x = mel(3, 32, 77)
    with torch.no_grad():
        tokens, _ = model.forward_features_with_attention(x)
        # tokens after the final norm are O(1), so they expose differences the small logits at init would hide
        torch.testing.assert_close(tokens, model.forward_features(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(model.forward_head(tokens), model(x), rtol=0, atol=1e-5)


def test_band_stats_are_each_bands_mean_then_std_over_time():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)  # band 0: 1, 3; band 1: 0, 0
    torch.testing.assert_close(band_stats(x), torch.tensor([[2.0, 0.0, 1.0, 0.0]]))


def test_clip_context_token_takes_the_clips_stats_and_defaults_to_the_segments_own():
    model = tiny_model(clip_context=True)
    segment, clip = mel(2, 32, 40), mel(2, 32, 400, seed=1)
    with torch.no_grad():
        own = model(segment)
        torch.testing.assert_close(model(segment, band_stats(segment)), own, rtol=0, atol=0)
        with_clip = model(segment, band_stats(clip))
        tokens = model.forward_features(segment, band_stats(clip))
    assert not torch.allclose(with_clip, own, atol=1e-4)  # the clip's context changes the segment's logits
    assert tokens.shape == (2, 1 + 4 * 5, 32)  # the context token, then the patches
    torch.testing.assert_close(model.forward_head(tokens), with_clip)


def test_models_without_clip_context_ignore_it_and_a_wrong_context_shape_raises():
    plain = tiny_model()
    assert plain.context_proj is None
    x = mel(2, 32, 40)
    torch.testing.assert_close(plain(x, torch.randn(2, 64)), plain(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected \(batch, 2 \* n_mels\) = \(2, 64\)"):
        tiny_model(clip_context=True)(x, torch.randn(2, 32))


def test_pre_logits_returns_the_pooled_embedding():
    model = tiny_model()
    tokens = model.forward_features(mel(2, 32, 40))
    embedding = model.forward_head(tokens, pre_logits=True)
    assert embedding.shape == (2, 32)
    torch.testing.assert_close(model.head.fc(embedding), model.forward_head(tokens))


def test_ensemble_predicts_the_mean_of_its_members_logits_and_concatenates_their_embeddings():
    torch.manual_seed(0)
    ensemble = ViTEnsemble(tiny_config(clip_context=True), 3).eval()
    x, context = mel(2, 32, 40), torch.randn(2, 64)
    logits = ensemble(x, context)
    torch.testing.assert_close(logits, sum(member(x, context) for member in ensemble.members) / 3)
    torch.testing.assert_close(ensemble.forward_head(ensemble.forward_features(x, context)), logits)
    embedding = ensemble.forward_head(ensemble.forward_features(x, context), pre_logits=True)
    assert embedding.shape == (2, ensemble.embed_dim) == (2, 3 * 32)
    torch.testing.assert_close(embedding[:, 32:64], ensemble.members[1].forward_head(
        ensemble.members[1].forward_features(x, context), pre_logits=True))
    assert not torch.allclose(ensemble.members[0](x, context), ensemble.members[1](x, context))  # own init each


def test_build_model_gives_a_plain_vit_for_one_member_and_refuses_an_ensemble_of_one():
    assert type(build_model(tiny_config())) is ViT and isinstance(build_model(tiny_config(), 2), ViTEnsemble)
    with pytest.raises(ValueError, match="at least 2 members"):
        ViTEnsemble(tiny_config(), 1)


def test_cls_pooling_reads_only_the_class_token():
    model = tiny_model(pool="cls")
    tokens = model.forward_features(mel(2, 32, 40))
    patches_zeroed = torch.cat([tokens[:, :1], torch.zeros_like(tokens[:, 1:])], dim=1)
    torch.testing.assert_close(model.forward_head(patches_zeroed), model.forward_head(tokens), rtol=0, atol=0)


def test_mean_pooling_averages_all_patch_tokens():
    model = tiny_model(pool="mean")
    tokens = model.forward_features(mel(2, 32, 40))
    expected = model.head.norm(tokens.mean(dim=1))
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), expected)


def test_weights_follow_vit_init_with_a_normally_initialised_head():
    model = tiny_model(pool="cls", dim=64, heads=2)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)
    qkv_std = model.encoder.blocks[0].attn.qkv.weight.std().item()
    assert 0.015 < qkv_std < 0.02  # std .02 truncated at 2 std
    assert 0.01 < model.head.fc.weight.std().item() < 0.025  # not zero-initialised
    assert 0.005 < model.cls_token.std().item() < 0.04
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert torch.equal(model.patch_embed.proj.bias, torch.zeros(64))


@pytest.mark.parametrize("name, expected", [("mini", 0.99e6), ("tiny", 5.7e6), ("small", 23e6), ("base", 90e6)])
def test_preset_parameter_counts(name, expected):
    with torch.device("meta"):  # counts shapes without allocating memory
        model = ViT(vit_config(name))
    assert abs(model.num_params() - expected) / expected < 0.15


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_stem_makes_a_3_s_crop_8_by_8_tokens_from_a_2x2_projection(name):
    config = vit_config(name, n_mels=128)
    assert config.stem_channels == (config.dim // 4, config.dim // 2, config.dim)
    with torch.device("meta"):
        model = ViT(config)
    assert model.patch_embed.proj.kernel_size == (2, 2)
    assert model.patch_embed.grid_size(129) == (8, 8)  # 3 s at 22,050 Hz, hop 512


def test_vit_config_applies_overrides_on_top_of_preset():
    cfg = vit_config("small", n_classes=50, pool="cls")
    assert (cfg.dim, cfg.heads, cfg.n_classes, cfg.pool) == (384, 6, 50, "cls")


def test_unknown_preset_raises_listing_the_names():
    with pytest.raises(ValueError, match="base.*mini.*small.*tiny"):
        vit_config("huge")
    assert set(PRESETS) == {"mini", "tiny", "small", "base"}


def test_config_survives_a_json_round_trip():
    cfg = tiny_config(patch_stride=(8, 5), pool="cls")
    restored = ViTConfig(**json.loads(json.dumps(asdict(cfg))))
    assert restored == cfg
    assert restored.patch_stride == (8, 5)


def test_state_dict_round_trip_gives_identical_logits():
    model = tiny_model(pool="cls")
    ckpt = {"model_config": json.loads(json.dumps(asdict(model.config))), "model": model.state_dict()}
    torch.manual_seed(123)  # a different init, overwritten by the state dict
    restored = ViT(ViTConfig(**ckpt["model_config"])).eval()
    restored.load_state_dict(ckpt["model"])
    x = mel(2, 32, 50)
    torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(pool="max"), "pool"),
        (dict(dim=30, heads=4), r"dim \(30\).*heads \(4\)"),
        (dict(dim=18, heads=3), "divisible by 4"),
        (dict(patch_size=(64, 8)), r"Patch height \(64\).*n_mels \(32\)"),
        (dict(patch_stride=(8, 0)), "time stride"),
        (dict(patch_stride=(9, 8)), "freq stride"),
        (dict(patch_size=(8, 8, 8)), "pair"),
        (dict(depth=0), ">= 1"),
        (dict(heads=0), ">= 1"),
        (dict(drop_path=1.0), "drop_path"),
        (dict(dropout=-0.1), "dropout"),
        (dict(stem_channels=(8, 8, 8, 8)), "multiples of 16"),
        (dict(stem_channels=(8, 0)), "stem channels >= 1"),
    ],
)
def test_bad_config_values_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def test_patchout_drops_whole_rows_and_columns_of_the_grid_in_training_only():
    from vitaudio.model import patchout

    grid_index = torch.arange(4 * 6, dtype=torch.float32).view(1, 24, 1).expand(2, -1, 3)  # token i holds i
    kept = patchout(grid_index, (4, 6), 0.5)  # (2, 2 * 3, 3)
    values = kept[0, :, 0].long().view(2, 3)
    rows, columns = values // 6, values % 6
    assert kept.shape == (2, 6, 3) and torch.equal(kept[0], kept[1])  # the same tokens for the whole batch
    assert (rows == rows[:, :1]).all() and (columns == columns[:1]).all()  # whole rows and columns survive
    assert patchout(grid_index[:, :2], (1, 2), 0.9).shape == (2, 1, 3)  # at least one row and one column stay

    model = ViT(tiny_config(patchout=0.5))
    mel = torch.randn(2, 1, 32, 64)
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(mel), model(mel))  # no patchout when scoring
        assert model._embed(mel, None).shape[1] == 4 * 8  # no prefix tokens in this config
        model.train()
        assert model._embed(mel, None).shape[1] == 2 * 4
