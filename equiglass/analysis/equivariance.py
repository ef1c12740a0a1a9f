"""Measure the symmetries of a propensity model on a real configuration.

A propensity model must give the same prediction for physically identical inputs. On one
configuration of a dataset, :func:`check_equivariance` applies

* **rotation**: ``K`` random rotations R (``e3nn.o3.rand_matrix``) of the positions *and* the
  lattice (``pos @ R.T``, cell ``box_matrix(box) @ R.T``; same edges). Outputs must be
  unchanged and every layer's features must rotate with their Wigner matrices,
  ``x -> x @ D(R).T`` (``irreps.D_from_matrix``), l = 0 channels included;
* **translation**: ``K`` random translations, positions re-wrapped into the box, graph rebuilt;
* **permutation**: ``K`` random permutations of the particle order, graph rebuilt; outputs
  and features must follow the permutation;
* **periodic image**: ``K`` times, a random quarter of the particles moved by random lattice
  vectors (out of the box), graph rebuilt,

and reports the largest absolute and relative deviation of the outputs and (for models with
``node_features``, the equivariant ones) of the l = 0 and l > 0 internal features. A
deviation fails when ``max abs > tolerance × max(1, max |reference|)``, the tolerance
defaulting to 1e-9 in float64 and 1e-4 in float32 (e3nn's float64 and a looser float32 one).

The check runs in float64 by default: the model is rebuilt from its ``[model]`` section while
the default dtype is float64 (e3nn computes Clebsch-Gordan coefficients in the default dtype
when a module is built) and the weights are loaded into it, keeping the rebuilt constant
buffers (:func:`exact_constants`: a float32 checkpoint holds the Clebsch-Gordan coefficients
rounded to float32).

Which models must be rotation invariant comes from the model registry
(:attr:`equiglass.nn.registry.ModelKind.rotation_equivariant`): the Bapst et al. GNN takes
Cartesian edge vectors and is not rotation invariant by design, so its rotation deviation is
reported but never fails the check. A model that refuses a rotated lattice (``ValueError``;
the ridge model takes orthorhombic box sides only, its descriptors being rotation invariant
by construction) has its rotation check skipped. A kind fitted in closed form
(``ModelKind.fit``) is checked from a trained checkpoint only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from e3nn import o3
from torch import nn
from torch_geometric.data import Data

from equiglass.data.format import load_dataset
from equiglass.data.geometry import wrap
from equiglass.data.graphs import DEFAULT_CUTOFF, POSITION_FIELDS, box_matrix, is_displacement, neighbour_list
from equiglass.nn.registry import ModelKind, build_model, model_kind
from equiglass.resources import DEMO_DATASET
from equiglass.training.checkpoint import load_checkpoint
from equiglass.training.config import load_config

#: Default tolerance of each computing dtype.
DEFAULT_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-9, torch.float32: 1e-4}
#: The transformations, in the order they are checked and printed.
TRANSFORMATIONS: tuple[str, ...] = ("rotation", "translation", "permutation", "periodic image")
#: Fraction of the particles moved by lattice vectors in a periodic-image trial.
IMAGE_FRACTION = 0.25


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Set torch's default dtype inside the block only."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Configuration:
    """The arrays of one configuration that a model sees (float64, LJ units).

    Attributes:
        positions: [N, 3] positions (wrapped or not).
        types: [N] species.
        box: [3] orthorhombic box sides.
        potential_energy: [N] per-particle potential energy, or None when the model takes none.
        is_displacement: [N, 3] displacement from the inherent state (a vector: it rotates with
            the positions), or None when the model takes none.
    """

    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    potential_energy: np.ndarray | None = None
    is_displacement: np.ndarray | None = None

    @classmethod
    def from_fields(
        cls, fields: Mapping[str, np.ndarray], positions: str = "thermal", with_potential_energy: bool = False,
        with_is_displacement: bool = False,
    ) -> Configuration:
        """Pick the positions (``"thermal"``, ``"inherent"`` or ``"cage"``), their energy and the displacement
        from the inherent state from a configuration's arrays."""
        position_field, energy_field = POSITION_FIELDS[positions]
        energy = np.asarray(fields[energy_field], dtype=np.float64) if with_potential_energy else None
        displacement = is_displacement(fields).astype(np.float64) if with_is_displacement else None
        return cls(np.asarray(fields[position_field], dtype=np.float64), np.asarray(fields["types"]),
                   np.asarray(fields["box"], dtype=np.float64), energy, displacement)

    def graph(self, cutoff: float, dtype: torch.dtype) -> Data:
        """The graph of this configuration (edges from :func:`~equiglass.data.graphs.neighbour_list`), floats in ``dtype``."""
        edge_index, edge_shift = neighbour_list(self.positions, self.box, cutoff)
        data = Data(
            pos=torch.tensor(self.positions, dtype=dtype),
            types=torch.as_tensor(self.types, dtype=torch.long),
            box=torch.tensor(self.box, dtype=dtype)[None],
            edge_index=edge_index,
            edge_shift=edge_shift,
            num_nodes=len(self.types),
        )
        if self.potential_energy is not None:
            data.potential_energy = torch.tensor(self.potential_energy, dtype=dtype)
        if self.is_displacement is not None:
            data.is_displacement = torch.tensor(self.is_displacement, dtype=dtype)
        return data

    def moved(self, positions: np.ndarray, order: np.ndarray | None = None) -> Configuration:
        """The same configuration with new ``positions``, particles (types, energies, displacements)
        taken in ``order``."""
        if order is None:
            return dataclasses.replace(self, positions=positions)
        energy = None if self.potential_energy is None else self.potential_energy[order]
        displacement = None if self.is_displacement is None else self.is_displacement[order]
        return Configuration(positions, self.types[order], self.box, energy, displacement)


@dataclass(frozen=True)
class ModelSource:
    """What a model to check is made of: a checkpoint, a TOML training config or a bare model kind.

    Attributes:
        model_section: the ``[model]`` section (``kind`` and hyper-parameters) for
            :func:`equiglass.nn.registry.build_model`.
        data_section: the graph settings (``cutoff``, ``positions``, ``with_potential_energy``,
            and ``dataset`` when known); missing ones take the defaults of :mod:`equiglass.data.graphs`.
        state: trained weights, or None for an untrained model.
        n_timescales: the number of outputs of a trained model (None: the dataset's).
        description: what it is and where it comes from, for the report.
    """

    model_section: dict[str, Any]
    data_section: dict[str, Any]
    state: dict[str, torch.Tensor] | None
    n_timescales: int | None
    description: str

    @classmethod
    def read(cls, source: str | Path) -> ModelSource:
        """A checkpoint file or run directory (trained weights); a ``.toml`` training config (an
        untrained model of its ``[model]`` section, graphs as its ``[data]`` section); or a
        model kind of the registry (untrained, default hyper-parameters)."""
        path = Path(source)
        if path.suffix == ".toml":
            config = load_config(path).to_dict()
            return cls(config["model"], config["data"], None, None, f"untrained {config['model']['kind']} model of {path}")
        if path.exists():
            trained = load_checkpoint(path)
            model = dict(trained.model_section)
            return cls(model, dict(trained.data_section), trained.model.state_dict(), len(trained.times),
                       f"{model.get('kind')} model of {path}")
        return cls({"kind": str(source)}, {}, None, None, f"untrained {source} model (default hyper-parameters)")

    @property
    def kind(self) -> ModelKind:
        """The registry entry of the model's kind.

        Raises:
            ValueError: an unknown kind or option (see :func:`equiglass.nn.registry.model_kind`).
        """
        return model_kind(self.model_section)[0]

    @property
    def dataset(self) -> Path | None:
        """The dataset the model was trained on or configured with, if known."""
        dataset = self.data_section.get("dataset")
        return None if dataset is None else Path(dataset)

    def build(self, dtype: torch.dtype, n_timescales: int) -> nn.Module:
        """The model, built while the default dtype is ``dtype``, weights loaded, in eval mode.

        ``n_timescales`` is used for an untrained model (a trained one has its own).

        Raises:
            ValueError: an unknown kind or option, or no trained weights for a kind fitted in
                closed form (such a model, e.g. the ridge model, predicts only once fitted).
        """
        if self.state is None and self.kind.fit == "closed_form":
            kind = self.model_section["kind"]
            raise ValueError(f"{self.description}: a {kind} model predicts only once fitted; check a trained checkpoint")
        with default_dtype(dtype):
            model = build_model(self.model_section, self.n_timescales or n_timescales)
        if self.state is not None:
            model.load_state_dict(exact_constants(model, self.state))
        return model.to(dtype).eval()

    def configuration(self, fields: Mapping[str, np.ndarray]) -> Configuration:
        """The configuration of ``fields`` as this model's graphs see it (positions, energy, displacement)."""
        return Configuration.from_fields(
            fields, self.data_section.get("positions", "thermal"), bool(self.data_section.get("with_potential_energy")),
            bool(self.data_section.get("with_is_displacement")),
        )

    @property
    def cutoff(self) -> float:
        """Neighbour cutoff of the model's graphs."""
        return float(self.data_section.get("cutoff", DEFAULT_CUTOFF))


def exact_constants(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the construction constants among its buffers taken from the freshly built ``model``.

    e3nn keeps the Clebsch-Gordan coefficients of a tensor product with ``l > 0`` inputs as
    persistent buffers (``..._w3j_l1_l2_l3``), so a float32 checkpoint stores them rounded to
    float32; loaded as they are into a float64 model they break its equivariance at ~1e-8.
    A buffer counts as a constant when its stored value is exactly ``model``'s own value rounded
    to the stored dtype (Clebsch-Gordan coefficients, output masks, basis frequencies; also a
    statistic still at its initial value, which is then the same number): the stored value is
    then replaced by ``model``'s, the same number at full precision. Everything else (weights,
    trained statistics) is kept.
    """
    built = dict(model.named_buffers())
    out = dict(state)
    for name, value in state.items():
        own = built.get(name)
        if own is not None and own.shape == value.shape and torch.equal(own.to(value.dtype), value):
            out[name] = own
    return out


# ------------------------------------------------------------------ the check


@dataclass
class Deviation:
    """Largest deviation of one quantity under one transformation, over every trial.

    Attributes:
        transformation: one of :data:`TRANSFORMATIONS`.
        quantity: ``"output"``, ``"features l=0"`` or ``"features l>0"``.
        max_abs: largest |transformed - expected| over every entry and trial.
        scale: largest |expected| (the size of the quantity).
        enforced: whether this deviation can fail the check.
        skipped: why the transformation could not be applied, if it could not.
    """

    transformation: str
    quantity: str
    max_abs: float = 0.0
    scale: float = 0.0
    enforced: bool = True
    skipped: str | None = None

    @property
    def max_rel(self) -> float:
        """``max_abs / scale`` (NaN for a quantity that is zero everywhere)."""
        return self.max_abs / self.scale if self.scale > 0 else math.nan

    def update(self, transformed: torch.Tensor, expected: torch.Tensor) -> None:
        """Fold in one trial."""
        self.max_abs = max(self.max_abs, float((transformed - expected).abs().max()))
        self.scale = max(self.scale, float(expected.abs().max()))

    def passed(self, tolerance: float) -> bool:
        """False when enforced and above ``tolerance × max(1, scale)`` or NaN; True otherwise."""
        if not self.enforced or self.skipped is not None:
            return True
        return self.max_abs <= tolerance * max(1.0, self.scale)


@dataclass
class EquivarianceReport:
    """Result of :func:`check_equivariance`."""

    description: str
    dtype: torch.dtype
    tolerance: float
    trials: int
    deviations: list[Deviation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every enforced deviation within tolerance."""
        return all(deviation.passed(self.tolerance) for deviation in self.deviations)

    def deviation(self, transformation: str, quantity: str = "output") -> Deviation:
        """The row of ``transformation`` and ``quantity``."""
        for deviation in self.deviations:
            if (deviation.transformation, deviation.quantity) == (transformation, quantity):
                return deviation
        raise KeyError(f"no deviation of {quantity!r} under {transformation!r}")

    def to_text(self) -> str:
        """A table of every deviation, the notes and the verdict."""
        dtype = str(self.dtype).removeprefix("torch.")
        lines = [
            f"{self.description}; {dtype}, {self.trials} trials per transformation",
            f"fails where max abs > {self.tolerance:g} x max(1, max |reference|)",
            "",
            f"{'transformation':<16}{'quantity':<15}{'max abs':>11}{'max rel':>11}  result",
        ]
        for row in self.deviations:
            if row.skipped is not None:
                lines.append(f"{row.transformation:<16}{row.quantity:<15}{'-':>11}{'-':>11}  skipped")
                continue
            result = ("ok" if row.passed(self.tolerance) else "FAIL") if row.enforced else "reported only"
            lines.append(f"{row.transformation:<16}{row.quantity:<15}{row.max_abs:>11.2e}{row.max_rel:>11.2e}  {result}")
        lines += ["", *(f"note: {note}" for note in self.notes)]
        lines.append("PASSED" if self.passed else "FAILED: deviations above tolerance")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Outputs:
    """A model's outputs ``[N, T]`` and, for equivariant models, every layer's features."""

    output: torch.Tensor
    features: list[torch.Tensor]


def _feature_masks(model: nn.Module) -> list[torch.Tensor]:
    """Per layer, a bool mask of the feature columns with l > 0 (empty for models without
    ``node_features`` and ``config.layer_irreps``, e.g. a user's own model)."""
    if not hasattr(model, "node_features") or not hasattr(getattr(model, "config", None), "layer_irreps"):
        return []
    return [
        torch.cat([torch.full((mul * ir.dim,), ir.l > 0) for mul, ir in irreps])
        for irreps in model.config.layer_irreps
    ]


def check_equivariance(
    model: nn.Module,
    configuration: Configuration,
    cutoff: float,
    *,
    trials: int = 3,
    tolerance: float | None = None,
    seed: int = 0,
    description: str = "model",
    rotation_invariant: bool = True,
) -> EquivarianceReport:
    """Measure how far ``model`` is from its symmetries on ``configuration`` (see the module docstring).

    Args:
        model: a propensity model ``Data -> [N, T]``; computes in the dtype of its
            floating-point parameters or buffers, and that dtype is the check's.
        configuration: the configuration (a real one: realistic neighbour counts).
        cutoff: neighbour cutoff of the model's graphs.
        trials: K, random draws per transformation.
        tolerance: see the module docstring; :data:`DEFAULT_TOLERANCE` of the dtype when None.
        seed: the draws (rotations, translations, permutations, images) depend only on it.
        description: the model's name for the report.
        rotation_invariant: whether the model claims invariance under every rotation
            (:attr:`equiglass.nn.registry.ModelKind.rotation_equivariant`); False: its rotation
            deviation is reported but never fails the check.

    Returns:
        The report; ``report.passed`` is the verdict.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    dtype = next(t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    tolerance = DEFAULT_TOLERANCE[dtype] if tolerance is None else float(tolerance)
    model.eval()
    masks = _feature_masks(model)
    layer_irreps = model.config.layer_irreps if masks else []

    @torch.no_grad()
    def run(data: Data) -> _Outputs:
        return _Outputs(model(data), model.node_features(data) if masks else [])

    base = configuration.graph(cutoff, dtype)
    reference = run(base)
    n = len(configuration.types)
    report = EquivarianceReport(
        f"{description}: configuration of N = {n} ({base.edge_index.shape[1] / n:.1f} neighbours per particle)",
        dtype, tolerance, trials,
    )
    if not rotation_invariant:
        report.notes.append(
            "the Bapst et al. GNN takes Cartesian edge vectors and is not rotation invariant by design "
            "(it is trained with cube-symmetry augmentation): its rotation deviation is reported, not enforced"
        )
    quantities = ["output"]
    if masks:
        quantities += ["features l=0"] + (["features l>0"] if any(mask.any() for mask in masks) else [])
    rows = {(name, q): Deviation(name, q, enforced=rotation_invariant or name != "rotation")
            for name in TRANSFORMATIONS for q in quantities}
    report.deviations = list(rows.values())

    def compare(name: str, outputs: _Outputs, order: torch.Tensor | None, rotation: torch.Tensor | None) -> None:
        """Fold one trial in: expected = reference rows in ``order``, features rotated by ``rotation``."""
        select = slice(None) if order is None else order
        rows[(name, "output")].update(outputs.output, reference.output[select])
        for irreps, mask, x, x_ref in zip(layer_irreps, masks, outputs.features, reference.features):
            expected = x_ref[select]
            if rotation is not None:
                with default_dtype(dtype):  # e3nn's Wigner matrices use default-dtype constants (1e-7 in float32)
                    wigner = irreps.D_from_matrix(rotation)
                expected = expected @ wigner.T
            rows[(name, "features l=0")].update(x[:, ~mask], expected[:, ~mask])
            if mask.any():
                rows[(name, "features l>0")].update(x[:, mask], expected[:, mask])

    rng = np.random.default_rng(seed)
    box = configuration.box
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rotations = o3.rand_matrix(trials, dtype=dtype)
    for trial in range(trials):
        # rotation of positions and lattice together, same edges
        rotation = rotations[trial]
        rotated = base.clone()
        rotated.pos = base.pos @ rotation.T
        rotated.box = box_matrix(base.box) @ rotation.T
        if "is_displacement" in base:
            rotated.is_displacement = base.is_displacement @ rotation.T
        try:
            compare("rotation", run(rotated), None, rotation)
        except ValueError as error:  # a model that takes orthorhombic sides only
            for q in quantities:
                rows[("rotation", q)].skipped = str(error)
        # translation, re-wrapped into the box
        shifted = wrap(configuration.positions + rng.uniform(-1, 1, 3) * box, box)
        compare("translation", run(configuration.moved(shifted).graph(cutoff, dtype)), None, None)
        # permutation of the particles
        order = rng.permutation(n)
        permuted = configuration.moved(configuration.positions[order], order)
        compare("permutation", run(permuted.graph(cutoff, dtype)), torch.as_tensor(order), None)
        # some particles moved by lattice vectors, out of the box
        chosen = rng.choice(n, size=max(1, int(IMAGE_FRACTION * n)), replace=False)
        imaged = configuration.positions.copy()
        imaged[chosen] += rng.integers(-2, 3, size=(len(chosen), 3)) * box
        compare("periodic image", run(configuration.moved(imaged).graph(cutoff, dtype)), None, None)
    skipped = {row.skipped for row in report.deviations if row.skipped is not None}
    report.notes += [f"rotation skipped: the model refused a rotated lattice ({reason})" for reason in skipped]
    return report


# ------------------------------------------------------------------ from a checkpoint, config or kind


def check_source(
    source: str | Path,
    dataset: str | Path | None = None,
    *,
    configuration: int = 0,
    trials: int = 3,
    tolerance: float | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> EquivarianceReport:
    """:func:`check_equivariance` of a checkpoint, TOML config or model kind (see :meth:`ModelSource.read`),
    rebuilt in ``dtype``, on configuration ``configuration`` of ``dataset`` (default: the
    model's own dataset where it exists, else the demo dataset)."""
    model_source = ModelSource.read(source)
    if dataset is None:
        own = model_source.dataset
        dataset = own if own is not None and own.is_dir() else DEMO_DATASET
    opened = load_dataset(dataset)
    if not 0 <= configuration < len(opened):
        raise ValueError(f"configuration {configuration} is not in {dataset}, which holds {len(opened)}")
    model = model_source.build(dtype, len(opened.times))
    return check_equivariance(
        model,
        model_source.configuration(opened.read(configuration)),
        model_source.cutoff,
        trials=trials,
        tolerance=tolerance,
        seed=seed,
        description=f"{model_source.description}, configuration {configuration} of {dataset}",
        rotation_invariant=model_source.kind.rotation_equivariant,
    )
