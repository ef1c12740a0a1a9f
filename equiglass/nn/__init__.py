"""Neural networks for propensity prediction.

Public classes:
    EquivariantConfig, EquivariantPropensityModel   the PCL22 rotation-equivariant model
    InteractionBlock, EquivariantConvolution        its layer and the convolution inside it (base class)
    TENSOR_PRODUCTS, build_convolution              the convolution's implementations, by name
    NodeEmbedding                                   particle type (+ potential energy) -> scalars
    BesselBasis, PolynomialCutoff, RadialEmbedding  edge-length encodings
"""

from equiglass.nn.convolution import TENSOR_PRODUCTS, EquivariantConvolution, InteractionBlock, build_convolution
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
    "TENSOR_PRODUCTS",
    "build_convolution",
]
