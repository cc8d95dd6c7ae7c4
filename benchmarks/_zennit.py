"""Zennit equivalents of the lrp_fx presets, for benchmarks that compare against Zennit (a reference only).

* :func:`zennit_composite`: the Zennit composite with the same name and defaults as an lrp_fx preset
  (``epsilon`` is a ``LayerMapComposite`` of Zennit's base layer map plus ``Epsilon`` on convolutions and dense layers;
  the others are Zennit's own composites).
* :func:`efficientnet_lite_canonizers`: canonizers that make Zennit's module hooks see EfficientNet-Lite
  (``efficientnet-lite-pytorch``) the way lrp_fx sees its graph: every batch norm merged into the convolution before it
  (:class:`ExactNamedMergeBatchNorm`: the merged batch norm is an exact identity, eps set to 0) and every residual
  ``x + inputs`` of an ``MBConvBlock`` routed through a ``zennit.layer.Sum`` module (:class:`MBConvSumCanonizer`),
  so that it gets the ``Norm`` rule of Zennit's base layer map instead of the plain gradient (which would hand the
  full relevance to both summands).
* :func:`zennit_relevance`: one attribution with ``zennit.attribution.Gradient``.

Zennit modifies the module it is registered on (canonizers merge parameters, hooks are attached), so always pass it a
``copy.deepcopy`` of the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "ZENNIT_PRESETS",
    "ExactNamedMergeBatchNorm",
    "ExactSequentialMergeBatchNorm",
    "MBConvSumCanonizer",
    "efficientnet_lite_canonizers",
    "zennit_composite",
    "zennit_relevance",
]

#: The lrp_fx presets that have a Zennit composite of the same name (the transformer presets have none).
ZENNIT_PRESETS = (
    "epsilon",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
)


def zennit_composite(
    preset: str,
    canonizers: Sequence[Any] = (),
    low: float | None = None,
    high: float | None = None,
    **params: float,
) -> Any:
    """The Zennit composite equivalent to the lrp_fx preset ``preset`` (Zennit's defaults, as lrp_fx's presets).

    ``low``/``high`` are the input box of ``epsilon_gamma_box`` (required for it, ignored otherwise); ``params`` are
    the rule parameters both libraries name alike (``epsilon``, ``stabilizer``, ``gamma`` for ``epsilon_gamma_box``).
    """
    import zennit.rules
    import zennit.types
    from zennit.composites import (
        EpsilonAlpha2Beta1,
        EpsilonAlpha2Beta1Flat,
        EpsilonGammaBox,
        EpsilonPlus,
        EpsilonPlusFlat,
        LayerMapComposite,
        layer_map_base,
    )

    canonizers = list(canonizers)
    if preset == "epsilon":
        layer_map = layer_map_base() + [
            (zennit.types.Convolution, zennit.rules.Epsilon()),
            (torch.nn.Linear, zennit.rules.Epsilon()),
        ]
        if params:
            raise TypeError("the epsilon composite here takes no parameters")
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if preset == "epsilon_gamma_box":
        if low is None or high is None:
            raise TypeError("epsilon_gamma_box needs low= and high= (the input's value bounds)")
        return EpsilonGammaBox(low=low, high=high, canonizers=canonizers, **params)
    classes = {
        "epsilon_plus": EpsilonPlus,
        "epsilon_plus_flat": EpsilonPlusFlat,
        "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
        "epsilon_alpha2_beta1_flat": EpsilonAlpha2Beta1Flat,
    }
    if preset not in classes:
        raise ValueError(f"no Zennit composite for preset {preset!r}; available: {', '.join(ZENNIT_PRESETS)}")
    return classes[preset](canonizers=canonizers, **params)


def _exact(base: type) -> type:
    """A subclass of the Zennit batch-norm merge canonizer ``base`` whose merged batch norm is the exact identity.

    Zennit's merge leaves ``eps`` in place, so the "identity" batch norm still divides by ``sqrt(1 + eps)`` (0.05 %
    per layer with EfficientNet-Lite's ``eps = 1e-3``); setting ``eps = 0`` after the merge (and restoring it on
    ``remove``) makes the canonized model compute the original function.
    """

    class Exact(base):
        def register(self, linears: list[torch.nn.Module], batch_norm: torch.nn.Module) -> None:
            self._eps = batch_norm.eps
            super().register(linears, batch_norm)
            batch_norm.eps = 0.0

        def remove(self) -> None:
            super().remove()
            self.batch_norm.eps = self._eps

    Exact.__name__ = Exact.__qualname__ = f"Exact{base.__name__}"
    return Exact


def ExactNamedMergeBatchNorm(name_map: list[tuple[tuple[str, ...], str]]) -> Any:  # noqa: N802 - a class factory
    """Zennit's ``NamedMergeBatchNorm`` (``[((linear names), batch norm name), ...]``), merged batch norms exact."""
    from zennit.canonizers import NamedMergeBatchNorm

    return _exact(NamedMergeBatchNorm)(name_map)


def ExactSequentialMergeBatchNorm() -> Any:  # noqa: N802 - a class factory
    """Zennit's ``SequentialMergeBatchNorm`` (a batch norm right after a linear layer in an ``nn.Sequential``),
    merged batch norms exact."""
    from zennit.canonizers import SequentialMergeBatchNorm

    return _exact(SequentialMergeBatchNorm)()


def _mbconv_forward(
    self: torch.nn.Module, inputs: torch.Tensor, drop_connect_rate: float | None = None
) -> torch.Tensor:
    """``MBConvBlock.forward`` of ``efficientnet-lite-pytorch`` (eval mode, no squeeze-excitation) with the residual
    sum done by the ``canonizer_sum`` module."""
    x = inputs
    if self._block_args.expand_ratio != 1:
        x = self._swish(self._bn0(self._expand_conv(inputs)))
    x = self._swish(self._bn1(self._depthwise_conv(x)))
    if self.has_se:  # pragma: no cover - EfficientNet-Lite has no squeeze-excitation
        raise NotImplementedError("squeeze-excitation blocks are not canonized")
    x = self._bn2(self._project_conv(x))
    args = self._block_args
    if self.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
        x = self.canonizer_sum(torch.stack([inputs, x], dim=-1))
    return x


def MBConvSumCanonizer() -> Any:  # noqa: N802 - a canonizer factory, named like Zennit's canonizer classes
    """A Zennit ``AttributeCanonizer`` giving every ``MBConvBlock`` a ``Sum`` module for its residual connection."""
    from efficientnet_lite_pytorch.model import MBConvBlock
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attribute_map(name: str, module: torch.nn.Module) -> dict[str, Any] | None:
        if isinstance(module, MBConvBlock):
            return {"forward": _mbconv_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


def efficientnet_lite_canonizers(model: torch.nn.Module) -> list[Any]:
    """Canonizers for an ``efficientnet_lite_pytorch.EfficientNet``: batch norms merged, residual sums as modules."""
    name_map: list[tuple[tuple[str, ...], str]] = [(("_conv_stem",), "_bn0"), (("_conv_head",), "_bn1")]
    for i, block in enumerate(model._blocks):
        prefix = f"_blocks.{i}"
        if block._block_args.expand_ratio != 1:
            name_map.append(((f"{prefix}._expand_conv",), f"{prefix}._bn0"))
        name_map.append(((f"{prefix}._depthwise_conv",), f"{prefix}._bn1"))
        name_map.append(((f"{prefix}._project_conv",), f"{prefix}._bn2"))
    return [ExactNamedMergeBatchNorm(name_map), MBConvSumCanonizer()]


def zennit_relevance(model: torch.nn.Module, composite: Any, x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Input relevance of ``model`` (a deep copy: Zennit modifies it) for output relevance ``seed`` (e.g. one-hot)."""
    from zennit.attribution import Gradient

    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x.detach().clone(), seed)
    return relevance.detach()
