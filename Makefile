# Two entry points for a fresh machine: `make run` (the main job on the embedded
# synthetic default) and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the releases this workplace keeps on disk; override on other machines,
# e.g. `make TORCH_SPEC="torch torchvision" install`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

# What the report tests render with: pdflatex (LaTeX tables) and headless Chromium (the HTML page);
# the shared results store's tests run against PostgreSQL, the sweep's on a one-node Slurm (both
# started by scripts/services.sh).
SYSTEM_PACKAGES := texlive-latex-base texlive-latex-recommended chromium poppler-utils postgresql slurm-wlm munge

EXAMPLE := reports/example
EXAMPLE_DB := runs/example/results.sqlite

.PHONY: install run test clean system-deps example-report

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26.2" "setuptools>=64" wheel
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	# sam2 ships as an sdist whose build imports torch; build it against the torch above and
	# without its optional CUDA extension (only used for mask post-processing we do not call).
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-build-isolation "sam2>=1.1.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mlebench run

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The example report of the embedded default (reports/example/): a sweep of the runs in
# reports/example/sweep.yaml — MLE-SAM and its no-auxiliary-head variant trained as `make run` does
# (500 steps), evaluated under every protocol (noise at the paper's two settings); the baselines
# SAM-LoRA, CWSAM and CMNeXt trained the same way and evaluated under missing-modality and full —
# then rendered. About an hour on 2 CPU cores (56 minutes after issue 21); run it again and only what is missing runs.
example-report: $(STAMP)
	mkdir -p runs/example $(EXAMPLE)
	$(BIN)/mlebench sweep $(EXAMPLE)/sweep.yaml --executor local --results $(EXAMPLE_DB) --folder runs/example/sweep
	$(BIN)/mlebench report --results $(EXAMPLE_DB) --format html --ci -o $(EXAMPLE)/report.html
	$(BIN)/mlebench report --results $(EXAMPLE_DB) --format latex -o $(EXAMPLE)/tables.tex --pdf
	$(BIN)/mlebench report --results $(EXAMPLE_DB) --format markdown -o $(EXAMPLE)/tables.md
	chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
	    --screenshot=$(CURDIR)/$(EXAMPLE)/report.png file://$(CURDIR)/$(EXAMPLE)/report.html

# Installs the renderers the report tests need, PostgreSQL and Slurm, from Debian's packages, when missing
# (CI runs this as root before `make test`; elsewhere run it with sudo or install them yourself).
system-deps:
	@if command -v pdflatex >/dev/null && command -v pdftotext >/dev/null && \
	    (command -v chromium >/dev/null || command -v chromium-browser >/dev/null) && \
	    ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v slurmctld >/dev/null && \
	    command -v munged >/dev/null; then \
	    echo "pdflatex, pdftotext, chromium, postgresql and slurm are installed"; \
	else \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(SYSTEM_PACKAGES); \
	fi

clean:
	rm -rf $(VENV)
