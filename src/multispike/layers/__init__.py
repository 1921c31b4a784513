"""Building blocks of the zoo, over time-first tensors ``[T, B, ...]``, one room each:

- :mod:`~multispike.layers.temporal`: time folding (:func:`fold_time`, :class:`TimeFold`) and
  :class:`TimeDropout`;
- :mod:`~multispike.layers.graph`: the graph-description protocol (:data:`RUN`,
  :class:`Record`, :class:`GraphNode`, :func:`run_node`);
- :mod:`~multispike.layers.norm`: the BN variants (:data:`NORMS`, :func:`build_norm`);
- :mod:`~multispike.layers.voting`: the PLIF paper's :class:`VotingLayer`;
- :mod:`~multispike.layers.neuron_slots`: the firing names and :class:`NeuronFactory`;
- :mod:`~multispike.layers.blocks`: :class:`ConvUnit`, :class:`MembraneBlock`,
  :class:`SpikeBlock`.

``docs/models.md`` ("Layers") tables them. Example::

    >>> import torch
    >>> from torch import nn
    >>> conv = TimeFold(nn.Conv2d(3, 8, 3, padding=1))
    >>> x = torch.rand(4, 2, 3, 16, 16)          # [T, B, C, H, W]
    >>> y = BatchNormFold(8)(conv(x))            # [T, B, 8, 16, 16]
    >>> VotingLayer(10, group=10)(torch.rand(4, 2, 100)).shape
    torch.Size([4, 2, 10])
"""

from multispike.layers.blocks import ConvUnit, MembraneBlock, SpikeBlock, conv1x1, conv3x3
from multispike.layers.graph import (
    RUN,
    GraphNode,
    Record,
    Run,
    describe_sequence,
    run_node,
    unwrap,  # noqa: F401 - imported from here, outside __all__
)
from multispike.layers.neuron_slots import (
    ANN,
    FIRINGS,
    INTEGER_FIRINGS,  # noqa: F401 - imported from here, outside __all__
    MT_FIRINGS,  # noqa: F401 - imported from here, outside __all__
    NeuronFactory,
    check_neuron_options,  # noqa: F401 - imported from here, outside __all__
    model_firing,  # noqa: F401 - imported from here, outside __all__
    neuron_option_names,
)
from multispike.layers.norm import (
    NORMS,
    BatchNormFold,
    BatchNormPerStep,
    BatchNormStepStats,
    TDBatchNorm,
    build_norm,
    get_norm,
)
from multispike.layers.temporal import TimeDropout, TimeFold, fold_time
from multispike.layers.voting import VotingLayer

__all__ = [
    "ANN",
    "FIRINGS",
    "NORMS",
    "BatchNormFold",
    "BatchNormPerStep",
    "BatchNormStepStats",
    "ConvUnit",
    "GraphNode",
    "MembraneBlock",
    "NeuronFactory",
    "RUN",
    "Record",
    "Run",
    "SpikeBlock",
    "TDBatchNorm",
    "TimeDropout",
    "TimeFold",
    "VotingLayer",
    "build_norm",
    "describe_sequence",
    "conv1x1",
    "conv3x3",
    "fold_time",
    "get_norm",
    "neuron_option_names",
    "run_node",
]
