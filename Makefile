# Two commands do all set-up on a fresh machine:
#   make demo   install, then run the main job on the embedded demo data
#   make test   install, then lint (ruff), build the docs (mkdocs --strict) and run the test suite (what .ci/run does)
PYTHON ?= python3
PIP := $(PYTHON) -m pip
export PIP_ROOT_USER_ACTION := ignore
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test docs
install:
	@# The CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test,docs]'

demo: install
	$(PYTHON) -m equiglass demo

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mkdocs build --strict --quiet
	$(PYTHON) -m pytest -q -n auto --dist loadfile --durations=15

# The documentation site, into build/site (warnings are errors); `mkdocs serve` to read it while editing.
docs: install
	$(PYTHON) -m mkdocs build --strict
