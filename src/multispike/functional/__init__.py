"""Pure maths of spiking neurons over tensors: charge, fire, reset, surrogate gradients.

No ``nn.Module`` and no state between calls: see :mod:`multispike.neurons` for the modules.
"""

from multispike.functional.dynamics import (
    RESET_GRADS,
    Charge,
    NeuronParams,
    NeuronState,
    hard_reset,
    if_charge,
    lif_charge,
    multistep,
    plif_charge,
    plif_tau,
    reset_spike,
    step,
)
from multispike.functional.firing import (
    DEFAULT_DELTA_FRACTIONS,
    FIRING_RULES,
    Binary,
    FiringRule,
    MultiThreshold,
    Ternary,
    TernaryMultiThreshold,
    get_firing,
)
from multispike.functional.surrogate import (
    SURROGATES,
    ATan,
    ClampSTE,
    Rectangular,
    Sigmoid,
    Surrogate,
    get_surrogate,
    heaviside,
)

__all__ = [
    "ATan",
    "Binary",
    "Charge",
    "ClampSTE",
    "DEFAULT_DELTA_FRACTIONS",
    "FIRING_RULES",
    "FiringRule",
    "MultiThreshold",
    "NeuronParams",
    "NeuronState",
    "RESET_GRADS",
    "Rectangular",
    "SURROGATES",
    "Sigmoid",
    "Surrogate",
    "Ternary",
    "TernaryMultiThreshold",
    "get_firing",
    "get_surrogate",
    "hard_reset",
    "heaviside",
    "if_charge",
    "lif_charge",
    "multistep",
    "plif_charge",
    "plif_tau",
    "reset_spike",
    "step",
]
