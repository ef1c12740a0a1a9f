"""Neural networks for propensity prediction.

Public classes:
    EquivariantConfig, EquivariantPropensityModel   the PCL22 rotation-equivariant model
    InteractionBlock, EquivariantConvolution        its layer and the convolution inside it
    NodeEmbedding                                   particle type (+ potential energy) -> scalars
    BesselBasis, PolynomialCutoff, RadialEmbedding  edge-length encodings
"""

from equiglass.nn.convolution import EquivariantConvolution, InteractionBlock
from equiglass.nn.embedding import NodeEmbedding
from equiglass.nn.equivariant import EquivariantConfig, EquivariantPropensityModel
from equiglass.nn.radial import BesselBasis, PolynomialCutoff, RadialEmbedding

__all__ = [
    "BesselBasis",
    "EquivariantConfig",
    "EquivariantConvolution",
    "EquivariantPropensityModel",
    "InteractionBlock",
    "NodeEmbedding",
    "PolynomialCutoff",
    "RadialEmbedding",
]
