"""Connectors of the native path on their own: shapes, masks, specs, parameter counts, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from orchestrator.errors import InvalidInputError
from orchestrator.native.connectors import (
    PerceiverConnector,
    QFormerConnector,
    TokenwiseConnector,
    build_connector,
    connector_from_spec,
)

IN_DIM, OUT_DIM = 12, 32
SMALL = {"qformer": {"num_queries": 5, "depth": 2, "heads": 4},
         "perceiver": {"num_latents": 6, "depth": 2, "heads": 4}}
KINDS = ["linear", "mlp1x_gelu", "mlp2x_gelu", "mlp3x_gelu", "qformer", "perceiver"]


def make(kind: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_connector(kind, IN_DIM, OUT_DIM, **{**SMALL.get(kind, {}), **overrides}).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    features = torch.randn(3, 9, IN_DIM)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for row, length in enumerate((9, 4, 1)):
        mask[row, :length] = True
        features[row, length:] = 1e3  # garbage in the padding: must not leak into any output
    return features, mask


@pytest.mark.parametrize("kind", KINDS)
def test_output_shapes_and_masks(kind: str) -> None:
    connector = make(kind)
    features, mask = padded_batch()
    output = connector(features, mask)
    out_mask = connector.output_mask(mask, features.shape[1])
    if kind in SMALL:
        count = next(iter(SMALL[kind].values()))
        assert output.shape == (3, count, OUT_DIM)
        assert out_mask.shape == (3, count) and bool(out_mask.all())
        assert connector.output_length(1) == connector.output_length(500) == count
    else:
        assert output.shape == (3, 9, OUT_DIM)  # token count kept
        assert torch.equal(out_mask, mask)
        assert connector.output_length(4) == 4
    assert torch.isfinite(output[out_mask.expand(3, -1)]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_padding_never_changes_real_outputs(kind: str) -> None:
    """Each item padded inside a batch gives the same output as the item alone, unpadded."""
    connector = make(kind)
    features, mask = padded_batch()
    batched = connector(features, mask)
    for row in range(3):
        length = int(mask[row].sum())
        alone = connector(features[row:row + 1, :length], mask[row:row + 1, :length])
        real = connector.output_mask(mask[row:row + 1], 9)[0]
        torch.testing.assert_close(batched[row][real], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["qformer", "perceiver"])
def test_resamplers_see_token_order_only_through_positions(kind: str) -> None:
    features = torch.randn(1, 7, IN_DIM)
    shuffled = features[:, torch.randperm(7, generator=torch.Generator().manual_seed(3))]
    with_positions = make(kind)
    assert not torch.allclose(with_positions(features), with_positions(shuffled), atol=1e-5)
    # Without position codes attention pooling is permutation-invariant: the positions are what carries order.
    without = make(kind, positional="none")
    torch.testing.assert_close(without(features), without(shuffled), rtol=1e-5, atol=1e-5)


def test_parameter_counts() -> None:
    assert make("linear").num_parameters() == IN_DIM * OUT_DIM + OUT_DIM
    assert make("mlp2x_gelu").num_parameters() == (IN_DIM * OUT_DIM + OUT_DIM) + (OUT_DIM * OUT_DIM + OUT_DIM)
    qformer = make("qformer")
    assert qformer.num_parameters() == sum(p.numel() for p in qformer.parameters())
    assert qformer.learned_tokens.shape == (5, 32)
    # Small initial queries/latents keep the first attention near-uniform.
    assert qformer.learned_tokens.std().item() < 0.05
    # More queries or depth means more parameters; the count follows the options.
    assert make("qformer", depth=3).num_parameters() > qformer.num_parameters()
    assert make("perceiver", num_latents=10).num_parameters() == make("perceiver").num_parameters() + 4 * 32


def test_hidden_width_is_capped_and_divisible_by_heads() -> None:
    wide = build_connector("perceiver", 8, 4096, num_latents=2, depth=1, heads=8)
    assert wide.hidden_dim == 768 and wide.output_projection.out_features == 4096
    odd = build_connector("qformer", 8, 36, num_queries=2, depth=1, heads=8)
    assert odd.hidden_dim == 40


@pytest.mark.parametrize("kind", KINDS)
def test_spec_rebuilds_the_same_architecture(kind: str) -> None:
    connector = make(kind)
    spec = json.loads(json.dumps(connector.spec()))  # what a checkpoint stores
    assert spec["kind"] == kind and spec["in_dim"] == IN_DIM and spec["out_dim"] == OUT_DIM
    rebuilt = connector_from_spec(spec)
    assert type(rebuilt) is type(connector) and rebuilt.spec() == connector.spec()
    rebuilt.load_state_dict(connector.state_dict())
    features, mask = padded_batch()
    torch.testing.assert_close(rebuilt.eval()(features, mask), connector(features, mask))


def test_families_by_name() -> None:
    assert isinstance(make("linear"), TokenwiseConnector) and make("linear").num_layers == 0
    assert make("mlp3x_gelu").num_layers == 3
    assert isinstance(make("qformer"), QFormerConnector)
    assert isinstance(make("perceiver"), PerceiverConnector)
    defaults = build_connector("qformer", 4, 16)
    assert (defaults.count, defaults.depth, defaults.heads) == (32, 2, 8)
    defaults = build_connector("perceiver", 4, 16)
    assert (defaults.count, defaults.depth, defaults.heads) == (64, 2, 8)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: build_connector("transformer", 4, 8), "unknown connector"),
    (lambda: build_connector("mlp0x_gelu", 4, 8), "at least one layer"),
    (lambda: build_connector("linear", 4, 8, depth=2), "takes no options"),
    (lambda: build_connector("qformer", 4, 8, num_latents=3), "unknown options"),
    (lambda: build_connector("qformer", 4, 30, heads=8, hidden_dim=30), "not divisible"),
    (lambda: build_connector("perceiver", 4, 8, depth=0), "'depth' must be a positive integer"),
    (lambda: build_connector("perceiver", 4, 8, positional="rotary"), "positional must be one of"),
    (lambda: build_connector("linear", 0, 8), "in_dim must be a positive integer"),
    (lambda: connector_from_spec({"kind": "linear"}), "needs 'kind', 'in_dim' and 'out_dim'"),
])
def test_invalid_construction_is_named(call, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()


@pytest.mark.parametrize("kind", ["mlp2x_gelu", "qformer"])
def test_invalid_inputs_are_named(kind: str) -> None:
    connector = make(kind)
    with pytest.raises(InvalidInputError, match=rf"\[batch, tokens, {IN_DIM}\]"):
        connector(torch.randn(1, 3, IN_DIM + 1))
    with pytest.raises(InvalidInputError, match="bool tensor"):
        connector(torch.randn(1, 3, IN_DIM), torch.ones(1, 3))
    with pytest.raises(InvalidInputError, match="at least one real feature token"):
        connector(torch.randn(2, 3, IN_DIM), torch.tensor([[True, False, False], [False, False, False]]))


@pytest.mark.parametrize("kind", ["mlp2x_gelu", "qformer", "perceiver"])
def test_runs_in_bfloat16(kind: str) -> None:
    connector = make(kind).to(torch.bfloat16)
    features, mask = padded_batch()
    output = connector(features.to(torch.bfloat16), mask)
    assert output.dtype == torch.bfloat16 and torch.isfinite(output[connector.output_mask(mask, 9).expand(3, -1)]).all()
