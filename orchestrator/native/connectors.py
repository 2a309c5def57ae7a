"""Trainable connectors: map frozen encoder features into an LLM's input-embedding space.

Four families, chosen by name:

- ``linear``: one projection per feature token (the first LLaVA).
- ``mlp{N}x_gelu``: N linear layers with GELU between them (LLaVA-1.5 uses ``mlp2x_gelu``; ChatTS uses
  the same shape over time-series patches). Linear and MLP connectors keep the token count.
- ``qformer``: a fixed number of learned queries, each block = self-attention over the queries,
  cross-attention to the features, feed-forward (BLIP-2 style, pre-LayerNorm).
- ``perceiver``: a Perceiver Resampler (Flamingo): learned latents attend to the concatenation of the
  features and the latents themselves, then a feed-forward, ``depth`` times.

Q-Former and Perceiver compress any number of feature tokens into a fixed count. Padded feature tokens
(mask False) are excluded from every attention through a key mask, so the same example gives the same
output alone or inside a padded batch.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

QUERY_INIT_STD = 0.02  # small learned queries/latents: attention starts near-uniform, training starts stable
_MLP_KIND = re.compile(r"^mlp(\d+)x_gelu$")
CONNECTOR_KINDS = ("linear", "mlp{N}x_gelu", "qformer", "perceiver")
POSITIONAL_CHOICES = ("sinusoidal", "none")


class Connector(nn.Module):
    """Base class: ``forward(features [B, T, in_dim], mask [B, T]) -> [B, T_out, out_dim]``."""

    kind: str
    in_dim: int
    out_dim: int

    def output_length(self, num_real_tokens: int) -> int:
        """How many LLM positions one media item with ``num_real_tokens`` real feature tokens occupies."""
        raise NotImplementedError

    def output_mask(self, mask: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
        """Which output tokens are real, ``[B, T_out]``; padding positions must not reach the LLM."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The constructor options beyond kind and dimensions, JSON-serialisable."""
        return {}

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this connector's architecture: ``connector_from_spec(spec)``."""
        return {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim, **self.options()}

    def num_parameters(self) -> int:
        """Number of parameters; every connector parameter is trainable by design."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, params={self.num_parameters():,}"

    def _check_input(self, features: torch.Tensor, mask: torch.Tensor | None) -> None:
        if features.dim() != 3 or features.shape[-1] != self.in_dim:
            raise InvalidInputError(
                f"{self.kind} connector: features must be [batch, tokens, {self.in_dim}], got {list(features.shape)}")
        if mask is not None:
            if mask.shape != features.shape[:2] or mask.dtype != torch.bool:
                raise InvalidInputError(
                    f"{self.kind} connector: mask must be a bool tensor of shape {list(features.shape[:2])}, "
                    f"got {mask.dtype} {list(mask.shape)}")
            if not bool(mask.any(dim=1).all()):
                raise InvalidInputError(f"{self.kind} connector: every media item needs at least one real feature token")


class TokenwiseConnector(Connector):
    """``linear`` (depth 0 hidden layers) and ``mlp{N}x_gelu``: one output token per real feature token."""

    def __init__(self, in_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_layers = in_dim, out_dim, num_layers
        self.kind = "linear" if num_layers == 0 else f"mlp{num_layers}x_gelu"
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(num_layers - 1):
            layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
        self.layers = nn.Sequential(*layers)

    def output_length(self, num_real_tokens: int) -> int:
        return num_real_tokens

    def output_mask(self, mask: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
        return mask if mask is not None else torch.ones(1, num_tokens, dtype=torch.bool)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(features, mask)
        return self.layers(features)


class _Attention(nn.Module):
    """Multi-head attention from ``dim``-wide queries to ``dim``-wide keys/values, with a key mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        batch, num_queries, dim = queries.shape
        head_dim = dim // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.heads, head_dim).transpose(1, 2)

        attend = None if context_mask is None else context_mask[:, None, None, :]  # True = may attend
        mixed = F.scaled_dot_product_attention(
            split(self.query(queries)), split(self.key(context)), split(self.value(context)), attn_mask=attend)
        return self.out(mixed.transpose(1, 2).reshape(batch, num_queries, dim))


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))


class _QFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(dim)
        self.self_attention = _Attention(dim, heads)
        self.cross_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.cross_attention = _Attention(dim, heads)
        self.feed_forward = _FeedForward(dim, ff_mult)

    def forward(self, queries: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        normed = self.self_norm(queries)
        queries = queries + self.self_attention(normed, normed, None)
        queries = queries + self.cross_attention(self.cross_norm(queries), self.context_norm(context), mask)
        return queries + self.feed_forward(queries)


class _PerceiverBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.latent_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.attention = _Attention(dim, heads)
        self.feed_forward = _FeedForward(dim, ff_mult)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        normed_latents = self.latent_norm(latents)
        # Flamingo: keys/values are the features *and* the latents, so a latent can also keep its own state.
        keys = torch.cat([self.context_norm(context), normed_latents], dim=1)
        key_mask = None
        if mask is not None:
            always = torch.ones(mask.shape[0], latents.shape[1], dtype=torch.bool, device=mask.device)
            key_mask = torch.cat([mask, always], dim=1)
        latents = latents + self.attention(normed_latents, keys, key_mask)
        return latents + self.feed_forward(latents)


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sine/cosine position codes ``[length, dim]``: attention pooling is otherwise blind to order."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device, dtype=torch.float32)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return codes.to(dtype)


class _ResamplingConnector(Connector):
    """Shared body of Q-Former and Perceiver: project features, add positions, run blocks over learned tokens."""

    count_option: str  # "num_queries" or "num_latents"

    def __init__(self, in_dim: int, out_dim: int, *, count: int, depth: int, heads: int, hidden_dim: int | None,
                 ff_mult: int, positional: str, block: type[nn.Module]) -> None:
        super().__init__()
        hidden_dim = _default_hidden_dim(out_dim, heads) if hidden_dim is None else hidden_dim
        for name, value in ((self.count_option, count), ("depth", depth), ("heads", heads),
                            ("hidden_dim", hidden_dim), ("ff_mult", ff_mult)):
            _require_positive_int(f"{self.kind} option {name!r}", value)
        if hidden_dim % heads:
            raise InvalidInputError(f"{self.kind}: hidden_dim {hidden_dim} is not divisible by heads {heads}")
        if positional not in POSITIONAL_CHOICES:
            raise InvalidInputError(f"{self.kind}: positional must be one of {POSITIONAL_CHOICES}, got {positional!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.count, self.depth, self.heads, self.hidden_dim = count, depth, heads, hidden_dim
        self.ff_mult, self.positional = ff_mult, positional
        self.input_projection = nn.Linear(in_dim, hidden_dim)
        self.learned_tokens = nn.Parameter(torch.randn(count, hidden_dim) * QUERY_INIT_STD)
        self.blocks = nn.ModuleList(block(hidden_dim, heads, ff_mult) for _ in range(depth))
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.output_projection = nn.Linear(hidden_dim, out_dim)

    def options(self) -> dict[str, Any]:
        return {self.count_option: self.count, "depth": self.depth, "heads": self.heads,
                "hidden_dim": self.hidden_dim, "ff_mult": self.ff_mult, "positional": self.positional}

    def output_length(self, num_real_tokens: int) -> int:
        return self.count

    def output_mask(self, mask: torch.Tensor | None, num_tokens: int) -> torch.Tensor:
        batch = 1 if mask is None else mask.shape[0]
        device = None if mask is None else mask.device
        return torch.ones(batch, self.count, dtype=torch.bool, device=device)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(features, mask)
        context = self.input_projection(features)
        if self.positional == "sinusoidal":
            context = context + sinusoidal_positions(context.shape[1], self.hidden_dim, context.device, context.dtype)
        tokens = self.learned_tokens.unsqueeze(0).expand(features.shape[0], -1, -1)
        for block in self.blocks:
            tokens = block(tokens, context, mask)
        return self.output_projection(self.output_norm(tokens))


class QFormerConnector(_ResamplingConnector):
    kind = "qformer"
    count_option = "num_queries"

    def __init__(self, in_dim: int, out_dim: int, *, num_queries: int = 32, depth: int = 2, heads: int = 8,
                 hidden_dim: int | None = None, ff_mult: int = 4, positional: str = "sinusoidal") -> None:
        super().__init__(in_dim, out_dim, count=num_queries, depth=depth, heads=heads, hidden_dim=hidden_dim,
                         ff_mult=ff_mult, positional=positional, block=_QFormerBlock)


class PerceiverConnector(_ResamplingConnector):
    kind = "perceiver"
    count_option = "num_latents"

    def __init__(self, in_dim: int, out_dim: int, *, num_latents: int = 64, depth: int = 2, heads: int = 8,
                 hidden_dim: int | None = None, ff_mult: int = 4, positional: str = "sinusoidal") -> None:
        super().__init__(in_dim, out_dim, count=num_latents, depth=depth, heads=heads, hidden_dim=hidden_dim,
                         ff_mult=ff_mult, positional=positional, block=_PerceiverBlock)


def _default_hidden_dim(out_dim: int, heads: int) -> int:
    # Internal width of the attention blocks: the LLM width, capped so that a 4096-wide LLM does not get a
    # half-billion-parameter connector, and rounded up to a multiple of the head count.
    if not isinstance(heads, int) or heads <= 0:
        raise InvalidInputError(f"connector option 'heads' must be a positive integer, got {heads!r}")
    width = min(out_dim, 768)
    return -(-width // heads) * heads


def _require_positive_int(what: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")


def build_connector(kind: str, in_dim: int, out_dim: int, **options: Any) -> Connector:
    """A fresh connector by name: ``linear``, ``mlp{N}x_gelu`` (N >= 1), ``qformer`` or ``perceiver``."""
    _require_positive_int("connector in_dim", in_dim)
    _require_positive_int("connector out_dim", out_dim)
    if not isinstance(kind, str):
        raise InvalidInputError(f"connector kind must be a string, got {kind!r}")
    mlp = _MLP_KIND.match(kind)
    if kind == "linear" or mlp:
        if options:
            raise InvalidInputError(f"connector {kind!r} takes no options, got {sorted(options)}")
        layers = 0 if kind == "linear" else int(mlp.group(1))
        if mlp and layers < 1:
            raise InvalidInputError(f"connector {kind!r}: the MLP needs at least one layer (mlp1x_gelu)")
        return TokenwiseConnector(in_dim, out_dim, layers)
    families = {"qformer": QFormerConnector, "perceiver": PerceiverConnector}
    if kind not in families:
        raise InvalidInputError(f"unknown connector {kind!r}; choose one of {', '.join(CONNECTOR_KINDS)}")
    family = families[kind]
    allowed = {family.count_option, "depth", "heads", "hidden_dim", "ff_mult", "positional"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidInputError(f"connector {kind!r}: unknown options {unknown}; allowed: {sorted(allowed)}")
    return family(in_dim, out_dim, **options)


def connector_from_spec(spec: dict[str, Any]) -> Connector:
    """Rebuild a connector (fresh weights) from ``Connector.spec()``."""
    if not isinstance(spec, dict) or not {"kind", "in_dim", "out_dim"} <= set(spec):
        raise InvalidInputError(f"a connector spec needs 'kind', 'in_dim' and 'out_dim', got {spec!r}")
    options = {key: value for key, value in spec.items() if key not in ("kind", "in_dim", "out_dim")}
    return build_connector(spec["kind"], spec["in_dim"], spec["out_dim"], **options)
