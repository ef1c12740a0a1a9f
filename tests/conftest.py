"""Fixtures shared by several test modules (plain helpers and constants are in factories.py).

None is autouse: a module that needs one on every test requests it with
``pytestmark = pytest.mark.usefixtures(...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from factories import with_inherent_state, write_dataset


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run every test of the module on one torch CPU thread (training sets it from the config anyway):
    on a 2-core machine shared with other jobs, two threads make tiny forward passes many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """Build modules in float64 during each test, then restore the previous default dtype.

    e3nn computes its Clebsch-Gordan buffers in the default dtype when a module is built, so
    ``.double()`` on a module built in float32 keeps float32-accurate coefficients (errors ~1e-7)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Eight synthetic configurations of 300 particles, three times (see
    :func:`factories.synthetic_configuration`): a dataset directory, one per test module."""
    return write_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="module")
def inherent_dataset(tmp_path_factory) -> Path:
    """:func:`dataset` with inherent states (:func:`factories.with_inherent_state`), for the
    displacement d from them."""
    return write_dataset(tmp_path_factory.mktemp("inherent"), change=with_inherent_state,
                         absent=("msd", "self_intermediate_scattering"))
