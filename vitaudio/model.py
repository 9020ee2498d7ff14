"""Vision Transformer over log-mel spectrograms, from first principles: (B, 1, n_mels, T) dB -> (B, n_classes) logits.

Position embeddings are fixed 2-D sin-cos (as MAE): half the channels encode the frequency-patch index, half the
time-patch index, computed for the actual patch grid (F', T') of each input. Why not a learned table (ViT, AST):
- any clip length scores as is: no interpolation of a table, no maximum length, so a model trained on 5 s crops
  scores a 30 s or 3 min clip, and a patch keeps the same embedding however long the clip around it is;
- no parameters, so nothing to overfit on small audio datasets.
With pool == "cls" a learnable class token, without position embedding, is prepended to the patch tokens.

With clip_context, a context token is prepended too: a linear map of each mel band's mean and std over the whole
(standardised) clip the segment comes from (`features.band_stats`). A segment is a few seconds; the token tells
every patch what the clip sounds like over its whole length, which a model that averages segment logits never
sees otherwise.
Given no context, a segment is its own clip.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import band_stats


@dataclass
class ViTConfig:
    n_mels: int = 128  # input height: mel bins of the spectrogram
    n_classes: int = 10  # number of output logits
    patch_size: tuple[int, int] = (16, 16)  # (freq bins, time frames) covered by one patch
    patch_stride: tuple[int, int] = (16, 16)  # (freq, time); smaller than patch_size = overlap (AST: 16x16, stride 10)
    dim: int = 192  # token width; divisible by heads and by 4 (sin-cos embeddings)
    depth: int = 12  # number of transformer blocks
    heads: int = 3  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width as a multiple of dim
    dropout: float = 0.0  # after attention projection, inside the MLP, before the classifier
    attn_dropout: float = 0.0  # on attention weights
    drop_path: float = 0.1  # stochastic depth: max rate, linearly increasing from 0 (first block) to this (last)
    pool: str = "mean"  # "cls": class token, "mean": average of all output tokens (with the context token if any)
    stem_channels: tuple[int, ...] = ()  # 3x3 stride-2 conv-BN-GELU layers before the patch projection; () = none
    clip_context: bool = False  # prepend a token made from the clip's per-band mean and std (band_stats)
    patchout: float = 0.0  # in training, drop this share of the patch grid's time columns and frequency rows (PaSST)

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; an int means a square patch.
        self.patch_size = _pair(self.patch_size)
        self.patch_stride = _pair(self.patch_stride)
        self.stem_channels = tuple(int(c) for c in self.stem_channels)
        if min(self.n_mels, self.n_classes, self.dim, self.depth, self.heads, *self.patch_size) < 1:
            raise ValueError(f"n_mels, n_classes, dim, depth, heads and patch_size must be >= 1: {self}.")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f'pool must be "cls" or "mean", got {self.pool!r}.')
        if self.dim % self.heads != 0:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads}).")
        if self.dim % 4 != 0:
            raise ValueError(f"dim ({self.dim}) must be divisible by 4 for 2-D sin-cos position embeddings.")
        if self.patch_size[0] > self.n_mels:
            raise ValueError(f"Patch height ({self.patch_size[0]}) doesn't fit n_mels ({self.n_mels}).")
        for axis, size, stride in zip(("freq", "time"), self.patch_size, self.patch_stride):
            if not 1 <= stride <= size:
                raise ValueError(f"{axis} stride ({stride}) must be in [1, patch size {size}]; larger skips input.")
        for name in ("dropout", "attn_dropout", "drop_path", "patchout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        reduction = self.stem_reduction
        if any(n % reduction for n in (*self.patch_size, *self.patch_stride)) or min(self.stem_channels, default=1) < 1:
            raise ValueError(f"With {len(self.stem_channels)} stem layers, patch size and stride must be multiples of "
                             f"{reduction} and stem channels >= 1: {self}.")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}.")

    @property
    def stem_reduction(self) -> int:
        """How many times smaller than the mel the stem's output is along each axis (each layer halves both)."""
        return 2 ** len(self.stem_channels)

    def training_bytes(self, n_frames: int, batch_size: int) -> int:
        """An upper estimate of the float32 activations one training step on (batch_size, 1, n_mels, n_frames)
        keeps for its backward pass: the stem's feature maps (conv, norm and GELU outputs), each block's token
        activations, and attention weights as if materialised (B, heads, N, N)."""
        values, height, width = 0, self.n_mels, n_frames
        for channels in self.stem_channels:
            height, width = (height + 1) // 2, (width + 1) // 2  # 3x3, stride 2, padding 1
            values += 3 * channels * height * width
        reduction = self.stem_reduction  # the patch grid over the stem's output, as PatchEmbedding has it
        tokens = 2 + math.prod((n - k // reduction) // (s // reduction) + 1 for n, k, s in zip(
            (height, width), self.patch_size, self.patch_stride))  # patches, cls, context
        per_block = tokens * (10 + 2 * self.mlp_ratio) * self.dim + 2 * self.heads * tokens**2
        return int(4 * batch_size * (values + self.depth * per_block))


# Every preset has a three-layer convolutional stem of dim/4, dim/2, dim channels, so a 16 x 16 patch is a 2 x 2
# projection of features 8x smaller than the mel. On real music (bench/RESULTS.md) two layers lifted mini's held-out
# accuracy from 0.52 to 0.56; a third lowered its mean val loss on both splits at the same cost per epoch (split seed
# 1, 3 seeds: 0.703 -> 0.679, test 76.6 -> 77.6 %; level on 5 grouped folds); a fourth (a 1 x 1 projection) and
# stride-1 layers did not.
# They also have the clip-context token (see the module docstring and bench/RESULTS.md for its effect).
PRESETS: dict[str, dict] = {
    "mini": dict(dim=128, depth=4, heads=4, stem_channels=(32, 64, 128), clip_context=True),  # 0.99 M: the default
    "tiny": dict(dim=192, depth=12, heads=3, stem_channels=(48, 96, 192), clip_context=True),  # 5.7 M parameters
    "small": dict(dim=384, depth=12, heads=6, stem_channels=(96, 192, 384), clip_context=True),  # 23 M
    "base": dict(dim=768, depth=12, heads=12, stem_channels=(192, 384, 768), clip_context=True),  # 91 M
}


def vit_config(name: str, **overrides) -> ViTConfig:
    """Named preset ("mini", "tiny", "small", "base") with any ViTConfig field overridden."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return ViTConfig(**{**PRESETS[name], **overrides})


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"Expected an int or a (freq, time) pair, got {value!r}.")
    return (int(value[0]), int(value[1]))


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], *, device: torch.device | None = None,
                        dtype: torch.dtype | None = None) -> Tensor:
    """Fixed 2-D sin-cos position embeddings (MAE): grid (F', T') -> (F' * T', dim), row-major like the patches."""
    n_freq, n_time = grid
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # (dim/4,)

    def embed_1d(positions: Tensor) -> Tensor:  # (P,) -> (P, dim/2)
        angles = positions[:, None] * omega[None, :]  # (P, 1) * (1, dim/4) -> (P, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    freq_index, time_index = torch.meshgrid(
        torch.arange(n_freq, device=device, dtype=torch.float32),
        torch.arange(n_time, device=device, dtype=torch.float32),
        indexing="ij",
    )  # (F', T') each
    embed = torch.cat([embed_1d(freq_index.flatten()), embed_1d(time_index.flatten())], dim=1)  # (F'*T', dim)
    return embed.to(dtype) if dtype is not None else embed


class PatchEmbedding(nn.Module):
    """(B, 1, n_mels, T) -> tokens (B, F' * T', dim) and grid (F', T').

    Without a stem: one strided convolution over the patches (ViT). With `stem_channels`: 3x3 stride-2
    conv-BN-GELU layers first, each halving both axes, then a convolution with the patch size and stride divided
    accordingly (Xiao et al. 2021, "Early convolutions help transformers see better"), so a token still covers
    about one patch of input but is built from local features, which small data sets need.
    """

    def __init__(self, *, n_mels: int, patch_size: tuple[int, int], patch_stride: tuple[int, int], dim: int,
                 stem_channels: tuple[int, ...] = ()):
        super().__init__()
        self.n_mels, self.patch_size, self.patch_stride = n_mels, patch_size, patch_stride
        layers, in_channels = [], 1
        for channels in stem_channels:
            layers += [nn.Conv2d(in_channels, channels, kernel_size=3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.GELU()]
            in_channels = channels
        self.stem = nn.Sequential(*layers)
        reduction = 2 ** len(stem_channels)
        self.proj_size = (patch_size[0] // reduction, patch_size[1] // reduction)
        self.proj_stride = (patch_stride[0] // reduction, patch_stride[1] // reduction)
        self.n_stem_layers = len(stem_channels)
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=self.proj_size, stride=self.proj_stride)

    def grid_size(self, n_frames: int) -> tuple[int, int]:
        """Patch grid (F', T') for an input of n_frames; trailing frames that fill no whole patch are dropped."""
        sizes = [self.n_mels, n_frames]
        for _ in range(self.n_stem_layers):
            sizes = [(n - 1) // 2 + 1 for n in sizes]  # 3x3, stride 2, padding 1
        return tuple((n - k) // s + 1 for n, k, s in zip(sizes, self.proj_size, self.proj_stride))

    def forward(self, mel_db: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if mel_db.ndim != 4:
            raise ValueError(f"Expected input (B, 1, n_mels, T), got shape {tuple(mel_db.shape)}.")
        _, C, H, T = mel_db.shape
        if C != 1:
            raise ValueError(f"Input channels ({C}) doesn't match model (1); pass a mono mel (B, 1, n_mels, T).")
        if H != self.n_mels:
            raise ValueError(f"Input height ({H}) doesn't match model n_mels ({self.n_mels}).")
        if T < self.patch_size[1]:
            raise ValueError(f"Input has {T} frames; the model needs at least {self.patch_size[1]} (one patch).")
        features = self.stem(mel_db)  # (B, 1, n_mels, T) -> (B, C, n_mels / 2^k, T / 2^k)
        patches = self.proj(features)  # -> (B, D, F', T')
        grid = (patches.shape[2], patches.shape[3])
        return patches.flatten(2).transpose(1, 2), grid  # (B, D, F', T') -> (B, N, D)


def patchout(tokens: Tensor, grid: tuple[int, int], share: float) -> Tensor:
    """Structured patchout (Koutini et al., 2022, PaSST): patch tokens (B, F' * T', D), row-major over the grid,
    -> (B, F'' * T'', D) without `share` of the frequency rows and of the time columns (at least one of each kept),
    the same ones for the whole batch. Positions were added before, so each kept token still knows its place."""
    n_freq, n_time = grid
    B, _, D = tokens.shape
    rows = torch.randperm(n_freq, device=tokens.device)[:max(1, n_freq - round(share * n_freq))].sort().values
    columns = torch.randperm(n_time, device=tokens.device)[:max(1, n_time - round(share * n_time))].sort().values
    kept = tokens.reshape(B, n_freq, n_time, D)[:, rows][:, :, columns]  # (B, F'', T'', D)
    return kept.reshape(B, -1, D)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's whole residual branch with probability p, rescale the rest; eval: identity."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention: (B, N, D) -> (B, N, D)."""

    def __init__(self, *, dim: int, heads: int, attn_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads)  # (B, N, 3D) -> (B, N, 3, H, Dh)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, N, 3, H, Dh) -> 3 x (B, H, N, Dh)

    def _merge_heads(self, out: Tensor) -> Tensor:
        B, H, N, Dh = out.shape
        out = out.transpose(1, 2).reshape(B, N, H * Dh)  # (B, H, N, Dh) -> (B, N, D)
        return self.proj_drop(self.proj(out))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._split_heads(x)
        dropout_p = self.attn_dropout if self.training else 0.0
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # torch's CPU flash attention runs its backward pass ~3x slower in bf16 than in fp32: kept in fp32, a
            # bf16 training step of `mini` is 1.15-1.3x faster (bench/RESULTS.md)
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout_p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, H, N, Dh)
        return self._merge_heads(out)

    def forward_with_weights(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Explicit softmax(q k^T / sqrt(d)) path: (B, N, D) -> output (B, N, D), weights (B, H, N, N)."""
        q, k, v = self._split_heads(x)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)  # (B, H, N, N)
        out = F.dropout(weights, self.attn_dropout, self.training) @ v  # (B, H, N, Dh)
        return self._merge_heads(out), weights


class Mlp(nn.Module):
    """(B, N, D) -> (B, N, D): Linear, GELU, dropout, Linear, dropout."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: (B, N, D) -> (B, N, D)."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, attn_dropout: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, attn_dropout=attn_dropout, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio), dropout=dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        attn_out, weights = self.attn.forward_with_weights(self.norm1(x))
        x = x + self.drop_path(attn_out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    """Stack of pre-norm blocks, stochastic depth rising linearly to drop_path: (B, N, D) -> (B, N, D)."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # plain floats: builds on the meta device
        self.blocks = nn.ModuleList(
            Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout, attn_dropout=attn_dropout, drop_path=rate)
            for rate in rates
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Same as forward, also returning each block's attention weights (B, H, N, N)."""
        weights = []
        for block in self.blocks:
            x, block_weights = block.forward_with_attention(x)
            weights.append(block_weights)
        return x, weights


class ClassificationHead(nn.Module):
    """Tokens (B, N, D) -> pool -> LayerNorm -> dropout -> Linear -> logits (B, n_classes)."""

    def __init__(self, *, dim: int, n_classes: int, pool: str, dropout: float = 0.0):
        super().__init__()
        self.pool = pool
        self.norm, self.drop, self.fc = nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, n_classes)

    def forward(self, tokens: Tensor, *, pre_logits: bool = False) -> Tensor:
        pooled = tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)  # (B, N, D) -> (B, D)
        pooled = self.drop(self.norm(pooled))
        return pooled if pre_logits else self.fc(pooled)


class ViT(nn.Module):
    """Spectrogram Vision Transformer: mel dB (B, 1, n_mels, T), any T >= patch time size -> logits (B, n_classes)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbedding(n_mels=config.n_mels, patch_size=config.patch_size,
                                          patch_stride=config.patch_stride, dim=config.dim,
                                          stem_channels=config.stem_channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pool == "cls" else None
        self.context_proj = nn.Linear(2 * config.n_mels, config.dim) if config.clip_context else None
        # tokens before the patches (timm's name): the class token, then the context token, each if any
        self.num_prefix_tokens = int(config.pool == "cls") + int(config.clip_context)
        self.encoder = TransformerEncoder(dim=config.dim, depth=config.depth, heads=config.heads,
                                          mlp_ratio=config.mlp_ratio, dropout=config.dropout,
                                          attn_dropout=config.attn_dropout, drop_path=config.drop_path)
        self.norm = nn.LayerNorm(config.dim)
        self.head = ClassificationHead(dim=config.dim, n_classes=config.n_classes, pool=config.pool,
                                       dropout=config.dropout)
        self.apply(self._init_weights)
        conv_weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(conv_weight.view(conv_weight.shape[0], -1))  # like a Linear on flattened patches (MAE)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _embed(self, mel_db: Tensor, context: Tensor | None) -> Tensor:
        """(B, 1, n_mels, T) -> patch tokens plus position, prefix tokens prepended if any: (B, P + N, D)."""
        tokens, grid = self.patch_embed(mel_db)
        tokens = tokens + sincos_pos_embed_2d(self.config.dim, grid, device=tokens.device, dtype=tokens.dtype)
        if self.training and self.config.patchout:
            tokens = patchout(tokens, grid, self.config.patchout)
        if self.context_proj is not None:
            context = band_stats(mel_db) if context is None else context  # (B, 2M)
            if context.shape != (mel_db.shape[0], 2 * self.config.n_mels):
                raise ValueError(f"context has shape {tuple(context.shape)}; expected (batch, 2 * n_mels) = "
                                 f"{(mel_db.shape[0], 2 * self.config.n_mels)} (features.band_stats of the clip)")
            context_token = self.context_proj(context.to(tokens.dtype)).unsqueeze(1)  # (B, 2M) -> (B, 1, D)
            tokens = torch.cat([context_token, tokens], dim=1)  # (B, N, D) -> (B, 1 + N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)  # (1, 1, D) -> (B, 1, D)
            tokens = torch.cat([cls, tokens], dim=1)  # (B, N, D) -> (B, 1 + N, D)
        return tokens

    def forward_features(self, mel_db: Tensor, context: Tensor | None = None) -> Tensor:
        """(B, 1, n_mels, T) and the clip context (B, 2 * n_mels) or None -> tokens after the final norm
        (B, P + N, D), the P prefix tokens first (class token, then context token, each if the config has it)."""
        return self.norm(self.encoder(self._embed(mel_db, context)))

    def forward_features_with_attention(self, mel_db: Tensor, context: Tensor | None = None
                                        ) -> tuple[Tensor, list[Tensor]]:
        """forward_features via explicit attention: tokens (B, P + N, D), depth x weights (B, H, P + N, P + N)."""
        tokens, weights = self.encoder.forward_with_attention(self._embed(mel_db, context))
        return self.norm(tokens), weights

    def forward_attention(self, mel_db: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """Attention weights of every block, depth x (B, heads, P + N, P + N), for attention rollout."""
        return self.forward_features_with_attention(mel_db, context)[1]

    def forward_head(self, tokens: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Tokens (B, P + N, D) -> logits (B, n_classes), or the pooled embedding (B, D) if pre_logits."""
        return self.head(tokens, pre_logits=pre_logits)

    @property
    def embed_dim(self) -> int:
        """Width of the pooled embedding `forward_head(..., pre_logits=True)`."""
        return self.config.dim

    def forward(self, mel_db: Tensor, context: Tensor | None = None) -> Tensor:
        """(B, 1, n_mels, T) segments, with their clips' `band_stats` (B, 2 * n_mels) or None -> (B, n_classes)."""
        return self.forward_head(self.forward_features(mel_db, context))

    def num_params(self) -> int:
        """Number of parameters (all are trainable; position embeddings have none)."""
        return sum(p.numel() for p in self.parameters())


class ViTEnsemble(nn.Module):
    """ViTs of one config trained apart (from other seeds): the same inputs as a ViT -> the mean of their logits.

    Members overfit a small training set in different ways, so their mean has a lower held-out loss than they have
    on average (bench/RESULTS.md: in every comparison made; accuracy +1 point on 5 folds). `forward_features` sets
    the members' tokens side by side, (B, P + N, K * D), so the pooled embedding is the members' embeddings
    concatenated.
    """

    def __init__(self, config: ViTConfig, n_members: int):
        super().__init__()
        if n_members < 2:
            raise ValueError(f"An ensemble needs at least 2 members, got {n_members}; use ViT for one.")
        self.config = config
        self.members = nn.ModuleList(ViT(config) for _ in range(n_members))

    def forward_features(self, mel_db: Tensor, context: Tensor | None = None) -> Tensor:
        """(B, 1, n_mels, T), (B, 2 * n_mels) or None -> the members' tokens side by side (B, P + N, K * D)."""
        return torch.cat([member.forward_features(mel_db, context) for member in self.members], dim=-1)

    def forward_head(self, tokens: Tensor, *, pre_logits: bool = False) -> Tensor:
        """Tokens (B, P + N, K * D) -> mean logits (B, n_classes), or the K pooled embeddings (B, K * D)."""
        member_tokens = tokens.chunk(len(self.members), dim=-1)  # (B, P + N, K * D) -> K x (B, P + N, D)
        outputs = [member.forward_head(t, pre_logits=pre_logits) for member, t in zip(self.members, member_tokens)]
        return torch.cat(outputs, dim=-1) if pre_logits else torch.stack(outputs).mean(dim=0)  # K x (B, C) -> (B, C)

    def forward(self, mel_db: Tensor, context: Tensor | None = None) -> Tensor:
        """(B, 1, n_mels, T) segments, their clips' contexts (B, 2 * n_mels) or None -> mean logits (B, n_classes)."""
        return torch.stack([member(mel_db, context) for member in self.members]).mean(dim=0)  # K x (B, C) -> (B, C)

    @property
    def embed_dim(self) -> int:
        return self.config.dim * len(self.members)

    num_params = ViT.num_params


class ConvNet(nn.Module):
    """A small CNN over the same inputs as a ViT, (B, 1, n_mels, T) -> (B, n_classes): conv3x3-BN-ReLU-maxpool
    blocks at full resolution, global average pool, dropout, linear. It is what `--teacher cnn` trains first for
    the ViTs to learn from (DeiT's convolutional teacher, Touvron et al., 2021): on one-second words it learns
    what 16 x 16-frame tokens blur (bench/RESULTS.md). The clip context is accepted and not used."""

    def __init__(self, *, n_classes: int, channels: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        blocks, in_channels = [], 1
        for out_channels in channels:
            blocks += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, n_classes))

    def forward(self, mel_db: Tensor, context: Tensor | None = None) -> Tensor:
        return self.head(self.features(mel_db).mean(dim=(2, 3)))  # (B, C, M / 16, T / 16) -> (B, C) -> (B, n_classes)

    num_params = ViT.num_params


def build_model(config: ViTConfig, members: int = 1) -> ViT | ViTEnsemble:
    """One ViT, or an ensemble of `members` ViTs of this config (what a checkpoint's "members" says)."""
    return ViT(config) if members == 1 else ViTEnsemble(config, members)
