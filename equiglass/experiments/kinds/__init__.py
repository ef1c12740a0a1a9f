"""The kinds of experiment: what is trained on which dataset, and what is reported.

    compare       every run on the first dataset: Pearson vs time on its test configurations
    temperatures  every run on every dataset, tested on every dataset at t ≈ τ_α
    transfer      a source backbone frozen, its decoder retrained on every other dataset, vs scratch
    features      the first layer's invariant features vs the classic structural descriptors
    scaling       every run at several training-set sizes: test Pearson against the number of configurations

A kind is one entry of :data:`KINDS` (its module's ``run`` and ``markdown``, and how many
datasets it needs); a spec names it in ``[experiment] kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from equiglass.experiments.kinds import compare, features, scaling, temperatures, transfer

if TYPE_CHECKING:
    from equiglass.experiments.runner import Experiment


@dataclass(frozen=True)
class Kind:
    """One kind of experiment.

    Attributes:
        run: trains and evaluates the experiment's runs; returns the kind's part of ``results.json``
            (plots already written into the results directory).
        markdown: that part -> the kind's section of ``results.md`` (lines).
        min_datasets: how many datasets it needs.
    """

    run: Callable[[Experiment], dict[str, Any]]
    markdown: Callable[[Mapping[str, Any]], list[str]]
    min_datasets: int = 1


#: Kind name (``[experiment] kind``) -> the kind.
KINDS: dict[str, Kind] = {
    "compare": Kind(compare.run, compare.markdown),
    "temperatures": Kind(temperatures.run, temperatures.markdown, min_datasets=2),
    "transfer": Kind(transfer.run, transfer.markdown, min_datasets=2),
    "features": Kind(features.run, features.markdown),
    "scaling": Kind(scaling.run, scaling.markdown),
}
#: The kind of a spec that names none.
DEFAULT_KIND = "compare"
