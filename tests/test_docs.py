"""The documentation site builds with warnings as errors, and its generated pages say what the code says."""

from __future__ import annotations

import ast
import html
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out), "--config-file", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def text_of(page: Path) -> str:
    """A built page's text: tags removed, entities decoded, whitespace collapsed (none before punctuation)."""
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))).split())
    return re.sub(r" (?=[).,;:])", "", text)


def words(text: str) -> str:
    return " ".join(text.replace("``", "").split())


def test_the_cli_page_documents_every_registered_subcommand(site):
    from equiglass.cli import build_parser

    parser = build_parser()
    subcommands = next(action for action in parser._actions if action.dest == "subcommand").choices
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    text = text_of(site / "reference" / "cli" / "index.html")
    assert len(subcommands) >= 13
    for name, subparser in subcommands.items():
        assert f'id="equiglass-{name}"' in page, f"no section for equiglass {name}"
        assert f"usage: equiglass {name}" in text
        for action in subparser._actions:
            for option in action.option_strings:
                assert option in text, f"equiglass {name} {option} missing from the CLI page"


def test_the_api_page_holds_the_notebook_functions_docstrings(site):
    tree = ast.parse((ROOT / "equiglass" / "api.py").read_text(encoding="utf-8"))
    functions = {node.name: ast.get_docstring(node) for node in tree.body if isinstance(node, ast.FunctionDef)}
    page = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    text = text_of(site / "reference" / "api" / "index.html")
    for name in ("load_dataset", "load_model", "predict"):
        assert f'id="equiglass.api.{name}"' in page
        first_paragraph = words(functions[name].split("\n\n")[0])
        assert first_paragraph in text, f"the docstring of equiglass.api.{name} is not on the API page"
    assert ":func:" not in text and ":class:" not in text


def test_every_experiment_spec_has_a_page_with_its_results(site):
    results = (ROOT / "experiments" / "RESULTS.md").read_text(encoding="utf-8")
    for spec in sorted((ROOT / "experiments").glob("*.toml")):
        page = site / "experiments" / spec.stem / "index.html"
        assert page.is_file(), f"no documentation page for {spec.name}"
        text = text_of(page)
        assert tomllib.loads(spec.read_text(encoding="utf-8"))["experiment"]["title"] in text
        if f"`{spec.name}`" in results:  # its section of RESULTS.md, with its plots
            for plot in re.findall(r"\]\(results/([\w.]+\.png)\)", results.split(f"`{spec.name}`", 1)[1].split("\n## ", 1)[0]):
                assert f"../results/{plot}" in page.read_text(encoding="utf-8")
                assert (site / "experiments" / "results" / plot).is_file()


def test_the_demo_table_of_the_readme_is_the_docs_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if re.match(r"\| .*\d ± \d", line) or line.startswith("| noise ceiling")]
    assert len(rows) == 8  # equivariant (types A and B), Bapst, ridge, |d| and force baselines, reference, ceiling
    for row in rows:
        assert row in docs
