"""Bad inputs through the command line: each one exit code 2 and a single ``error:`` line naming the file.

One table row per bad input: a builder that makes it under ``tmp_path`` (from the module's
synthetic dataset and one-epoch ridge run) and returns the command line and the offending
path the error must name.
"""

from __future__ import annotations

import pickle
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import write_config

from equiglass.cli import main
from equiglass.training.config import to_toml
from equiglass.training.loop import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A bad input: (tmp_path, dataset, run directory) -> (command line, path the error names).
Case = Callable[[Path, Path, Path], tuple[list[str], Path]]


@pytest.fixture(scope="module")
def run(tmp_path_factory, dataset) -> Path:
    """A one-epoch ridge run on the synthetic dataset; its config is ``<run>/../configs/ridge.toml``."""
    directory = tmp_path_factory.mktemp("run")
    config = write_config(directory / "configs", dataset, "ridge")
    return train(config, directory / "ridge", progress=False).run_dir


def predict_into(tmp_path: Path, run: Path, dataset: Path) -> list[str]:
    """``equiglass predict`` of ``run`` on ``dataset`` into a fresh directory."""
    return ["predict", str(run), str(dataset), "--out", str(tmp_path / "predictions")]


# ------------------------------------------------------------------ datasets


def copied_dataset(tmp_path: Path, dataset: Path) -> Path:
    """A copy of ``dataset`` that a case may damage."""
    return Path(shutil.copytree(dataset, tmp_path / "dataset"))


def rewritten_configuration(tmp_path: Path, dataset: Path, change: Callable[[dict], None]) -> tuple[Path, Path]:
    """A copy of ``dataset`` whose configuration 2 has its arrays changed by ``change`` (written raw,
    unchecked); returns the dataset and the configuration file."""
    copy = copied_dataset(tmp_path, dataset)
    path = copy / "configuration_00002.npz"
    with np.load(path) as archive:
        fields = dict(archive)
    change(fields)
    with path.open("wb") as stream:
        np.savez(stream, **fields)
    return copy, path


def missing_manifest(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    copy = copied_dataset(tmp_path, dataset)
    (copy / "manifest.json").unlink()
    return predict_into(tmp_path, run, copy), copy


def truncated_configuration(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    copy = copied_dataset(tmp_path, dataset)
    path = copy / "configuration_00003.npz"
    path.write_bytes(path.read_bytes()[:200])
    return predict_into(tmp_path, run, copy), path


def nan_positions(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    copy, path = rewritten_configuration(tmp_path, dataset, lambda fields: fields["positions"].__setitem__((4, 1), np.nan))
    return predict_into(tmp_path, run, copy), path


def foreign_types(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    copy, path = rewritten_configuration(tmp_path, dataset, lambda fields: fields["types"].__setitem__(7, 2))
    return predict_into(tmp_path, run, copy), path


# ------------------------------------------------------------------ configs


def changed_config(tmp_path: Path, run: Path, section: str, changes: dict) -> Path:
    """The run's config with ``changes`` in ``section``, written under ``tmp_path`` (same dataset)."""
    source = run.parent / "configs" / "ridge.toml"
    content = tomllib.loads(source.read_text())
    content["data"]["dataset"] = str((source.parent / content["data"]["dataset"]).resolve())
    content[section].update(changes)
    path = tmp_path / "bad.toml"
    path.write_text(to_toml(content))
    return path


def config_case(section: str, changes: dict) -> Case:
    """A ``train`` of the run's config with ``changes`` in ``section``."""

    def case(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
        path = changed_config(tmp_path, run, section, changes)
        return ["train", str(path), "--run-dir", str(tmp_path / "run")], path

    return case


def equivariant_config_case(changes: dict) -> Case:
    """A ``train`` of a tiny equivariant config with ``changes`` in ``[model]``."""

    def case(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
        path = write_config(tmp_path, dataset, "equivariant", model_options=changes)
        return ["train", str(path), "--run-dir", str(tmp_path / "run")], path

    return case


# ------------------------------------------------------------------ checkpoints


def written_checkpoint(path: Path, write: Callable[[Path], None]) -> Path:
    """``path`` after ``write(path)``."""
    write(path)
    return path


def edited_checkpoint(run: Path, path: Path, edit: Callable[[dict], None]) -> Path:
    """The run's best.pt with its content changed by ``edit``, saved as ``path``."""
    content = torch.load(run / "best.pt", weights_only=True)
    edit(content)
    torch.save(content, path)
    return path


def predict_with(make: Callable[[Path, Path], Path]) -> Case:
    """``predict`` with the checkpoint ``make(tmp_path, run)``."""

    def case(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
        path = make(tmp_path, run)
        return ["predict", str(path), str(dataset), "--out", str(tmp_path / "predictions")], path

    return case


def missing_checkpoint(tmp_path: Path, run: Path) -> Path:
    return tmp_path / "missing.pt"


def truncated_checkpoint(tmp_path: Path, run: Path) -> Path:
    return written_checkpoint(tmp_path / "cut.pt", lambda path: path.write_bytes((run / "best.pt").read_bytes()[:500]))


def foreign_pickle(tmp_path: Path, run: Path) -> Path:
    return written_checkpoint(tmp_path / "foreign.pt", lambda path: path.write_bytes(pickle.dumps(Path("x"))))


def foreign_dict(tmp_path: Path, run: Path) -> Path:
    return written_checkpoint(tmp_path / "dict.pt", lambda path: torch.save({"weights": torch.zeros(3)}, path))


def bad_cutoff_checkpoint(tmp_path: Path, run: Path) -> Path:
    return edited_checkpoint(run, tmp_path / "cutoff.pt", lambda content: content["data"].__setitem__("cutoff", -1.0))


def equivariance_of_bad_positions(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    path = edited_checkpoint(run, tmp_path / "positions.pt",
                             lambda content: content["data"].__setitem__("positions", "unwrapped"))
    return ["check-equivariance", str(path), "--dataset", str(dataset), "--trials", "1"], path


def resume_case(edit: Callable[[Path], None]) -> Case:
    """``train`` resuming a copy of the run whose ``last.pt`` was changed by ``edit(run copy)``."""

    def case(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
        copy = Path(shutil.copytree(run, tmp_path / "run"))
        edit(copy)
        config = run.parent / "configs" / "ridge.toml"
        return ["train", str(config), "--run-dir", str(copy)], copy / "last.pt"

    return case


def best_over_last(run: Path) -> None:
    shutil.copy(run / "best.pt", run / "last.pt")


def last_without_config(run: Path) -> None:
    edited_checkpoint(run, run / "last.pt", lambda content: content.pop("config"))


# ------------------------------------------------------------------ output directories


def predict_into_dataset(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    copy = copied_dataset(tmp_path, dataset)
    return ["predict", str(run), str(copy), "--out", str(copy), "--overwrite"], copy


def predict_under_file(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    (tmp_path / "file").write_text("")
    return ["predict", str(run), str(dataset), "--out", str(tmp_path / "file" / "out")], tmp_path / "file" / "out"


def evaluate_under_file(tmp_path: Path, dataset: Path, run: Path) -> tuple[list[str], Path]:
    (tmp_path / "file").write_text("")
    return ["evaluate", str(run), str(dataset), "--split", "all", "--out", str(tmp_path / "file" / "out")], \
        tmp_path / "file" / "out"


CASES = [
    pytest.param(missing_manifest, id="dataset-missing-manifest"),
    pytest.param(truncated_configuration, id="dataset-truncated-npz"),
    pytest.param(nan_positions, id="dataset-nan-positions"),
    pytest.param(foreign_types, id="dataset-type-2"),
    pytest.param(config_case("train", {"learning_rate": 0.1}), id="config-unknown-key"),
    pytest.param(config_case("train", {"epochs": "ten"}), id="config-wrong-type"),
    pytest.param(config_case("data", {"split": [0.8, 0.5, 0.1]}), id="config-split-fractions-above-1"),
    pytest.param(config_case("data", {"split": [0.8, 0.0, 0.2]}), id="config-split-without-validation"),
    pytest.param(config_case("data", {"cutoff": 0.0}), id="config-cutoff-zero"),
    pytest.param(config_case("train", {"threads": 100000}), id="config-threads-100000"),
    pytest.param(equivariant_config_case({"l_max": 13}), id="config-l-max-13"),
    pytest.param(predict_with(missing_checkpoint), id="checkpoint-missing"),
    pytest.param(predict_with(truncated_checkpoint), id="checkpoint-truncated"),
    pytest.param(predict_with(foreign_pickle), id="checkpoint-foreign-pickle"),
    pytest.param(predict_with(foreign_dict), id="checkpoint-foreign-dict"),
    pytest.param(predict_with(bad_cutoff_checkpoint), id="checkpoint-bad-cutoff"),
    pytest.param(equivariance_of_bad_positions, id="checkpoint-bad-positions-check-equivariance"),
    pytest.param(resume_case(best_over_last), id="checkpoint-best-over-last"),
    pytest.param(resume_case(last_without_config), id="checkpoint-last-without-config"),
    pytest.param(predict_into_dataset, id="out-is-the-dataset"),
    pytest.param(predict_under_file, id="out-under-a-file-predict"),
    pytest.param(evaluate_under_file, id="out-under-a-file-evaluate"),
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_naming_the_file(case: Case, tmp_path, dataset, run, capsys):
    argv, offending = case(tmp_path, dataset, run)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(offending) in errors[0], errors[0]
