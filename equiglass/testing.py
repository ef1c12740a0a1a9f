"""Test helpers for propensity models, yours included (as ``nequip.utils.test`` ships NequIP's).

A propensity model maps the PyG graph of one periodic configuration (see
:mod:`equiglass.data.graphs`: ``pos [N, 3]``, ``types [N]``, ``box [1, 3]`` sides,
``edge_index [2, E]``, ``edge_shift [E, 3]``, optionally ``potential_energy [N]`` and
``is_displacement [N, 3]``) to per-particle outputs ``[N, T]``. These helpers raise :class:`AssertionError` where it breaks
a symmetry of the physics or does not compile into one graph:

* :func:`assert_symmetries`: outputs unchanged under rotations of positions and lattice,
  translations (positions re-wrapped into the box), periodic images (particles moved by
  lattice vectors), and following permutations of the particles; the measurement is
  :func:`equiglass.analysis.equivariance.check_equivariance` (see its module docstring);
* :func:`assert_no_graph_breaks`: ``torch.compile`` captures the whole forward in one graph.

Example::

    from equiglass.testing import assert_no_graph_breaks, assert_symmetries

    model = MyModel().double()            # float64: tolerance 1e-9 (1e-4 in float32)
    data = configuration_graph(...)       # one periodic configuration, neighbours within `cutoff`
    assert_symmetries(model, data, cutoff=2.0)
    assert_symmetries(model, data, cutoff=2.0, symmetries=("permutation",))  # a subset
    assert_no_graph_breaks(model.eval(), data)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_geometric.data import Data

from equiglass.analysis.equivariance import TRANSFORMATIONS, Configuration, EquivarianceReport, check_equivariance
from equiglass.data.graphs import DEFAULT_CUTOFF

__all__ = ["TRANSFORMATIONS", "assert_no_graph_breaks", "assert_symmetries", "configuration_of"]


def configuration_of(data: Data) -> Configuration:
    """The configuration of a one-configuration graph (``box`` of 3 orthorhombic sides), in float64.

    Raises:
        ValueError: a batch of several configurations, or a non-orthorhombic cell ``[1, 3, 3]``.
    """
    box = data.box.reshape(-1)
    if box.numel() != 3:
        raise ValueError(f"need one configuration with 3 orthorhombic box sides, got box of shape {tuple(data.box.shape)}")
    optional = [data[name].detach().double().cpu().numpy() if name in data else None
                for name in ("potential_energy", "is_displacement")]
    return Configuration(
        data.pos.detach().double().cpu().numpy(),
        data.types.cpu().numpy(),
        box.detach().double().cpu().numpy(),
        *optional,
    )


def assert_symmetries(
    model: nn.Module,
    data: Data,
    cutoff: float = DEFAULT_CUTOFF,
    *,
    symmetries: Sequence[str] = TRANSFORMATIONS,
    trials: int = 3,
    tolerance: float | None = None,
    seed: int = 0,
) -> EquivarianceReport:
    """Assert that ``model`` respects ``symmetries`` on the configuration of ``data``.

    Each symmetry of :data:`TRANSFORMATIONS` (``"rotation"``, ``"translation"``,
    ``"permutation"``, ``"periodic image"``) is drawn ``trials`` times (draws depend on ``seed``
    only); graphs of moved configurations are rebuilt with neighbours within ``cutoff``. Outputs
    must be unchanged (permutation: permuted) within ``tolerance × max(1, max |output|)``,
    default 1e-9 in float64 and 1e-4 in float32 (the model's dtype); for equiglass's equivariant
    model, every layer's features must also rotate with their Wigner matrices.

    ``model`` is put in eval mode (BatchNorm with running statistics: per-particle predictions).

    Args:
        model: ``Data -> [N, T]``; computes in the dtype of its floating-point parameters.
        data: the graph of one configuration (``box [1, 3]`` or ``[3]``); only its positions,
            types, box, ``potential_energy`` and ``is_displacement`` (when present) are used.
        cutoff: neighbour cutoff of the model's graphs (LJ units).
        symmetries: the symmetries to assert (default all).
        trials: see :func:`~equiglass.analysis.equivariance.check_equivariance`.
        tolerance: see :func:`~equiglass.analysis.equivariance.check_equivariance`.
        seed: see :func:`~equiglass.analysis.equivariance.check_equivariance`.

    Returns:
        The report of every deviation measured (``report.to_text()`` prints it).

    Raises:
        AssertionError: a symmetry broken, or one that could not be applied (e.g. a model that
            refuses a rotated lattice); the message is the report.
        ValueError: an unknown symmetry, or ``data`` not one orthorhombic configuration.

    Example::

        report = assert_symmetries(model, data, cutoff=2.0, symmetries=("rotation", "translation"))
        print(report.to_text())
    """
    unknown = set(symmetries) - set(TRANSFORMATIONS)
    if unknown:
        raise ValueError(f"unknown symmetries {sorted(unknown)}; choose among {list(TRANSFORMATIONS)}")
    report = check_equivariance(model, configuration_of(data), cutoff, trials=trials, tolerance=tolerance, seed=seed)
    rows = [row for row in report.deviations if row.transformation in symmetries]
    broken = [row for row in rows if row.skipped is not None or not row.passed(report.tolerance)]
    if broken:
        names = sorted({f"{row.transformation} ({row.quantity})" for row in broken})
        raise AssertionError(f"symmetries broken or not applied: {', '.join(names)}\n{report.to_text()}")
    return report


def assert_no_graph_breaks(model: nn.Module, data: Data) -> None:
    """Assert that TorchDynamo captures ``model(data)`` in one graph (``torch.compile`` runs it without graph breaks).

    Runs ``model(data)`` once under :func:`torch._dynamo.explain` (in the model's current mode:
    a training-mode BatchNorm updates its running statistics).

    Raises:
        AssertionError: the graph breaks, each with its reason and source line.

    Example::

        assert_no_graph_breaks(model.eval(), data)
    """
    explanation = torch._dynamo.explain(model)(data)
    if explanation.graph_break_count > 0 or explanation.break_reasons:
        reasons = [
            f"  {reason.reason}" + (f" at {reason.user_stack[-1].filename}:{reason.user_stack[-1].lineno}" if reason.user_stack else "")
            for reason in explanation.break_reasons
        ]
        raise AssertionError(
            f"{explanation.graph_count} graphs, {len(reasons)} graph break(s) in {type(model).__name__}:\n" + "\n".join(reasons)
        )
