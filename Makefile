# Two entry points (see README):  make reports   |   make test
# Everything else is a building block of those two.

PYTHON   ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV     := .venv
PY       := $(CURDIR)/$(VENV)/bin/python
KERNEL   := audience-intel

# Parameters of the main job (papermill parameters of every notebook)
N_USERS  ?= 50000
SEED     ?= 42
INPUT    ?=
MAPPING  ?=
DATA     ?= $(CURDIR)/data
OUT      ?= $(CURDIR)/reports
ENGINE   ?= duckdb
# Stages run at once, each in its own kernel, within MEMORY_BUDGET (a stage waits for the stages it reads: STAGE_NEEDS in
# scripts/run_notebooks.py, from a traced run)
JOBS     ?= 2
# GB the stages run at once may need together, by their estimated peaks (empty = 6, or 60% of the memory)
MEMORY_BUDGET ?=
# Run configuration and input options (empty = the configuration's / notebook's default)
CONFIG           ?=
OBSERVATION_DATE ?=
DELIMITER        ?=
ENCODING         ?=
SEED_OUTCOME     ?=
SEED_VALUE       ?=
SEED_IDS         ?=
RMST_TAU_DAYS    ?=
HOST     ?= 127.0.0.1
PORT     ?= 8050

# Test runs write to build/, never over a real run's data/ and reports/
TEST_DATA    := $(CURDIR)/build/test-data
TEST_REPORTS := $(CURDIR)/build/test-reports

.PHONY: setup browser reports test unit benchmark explorer clean help

help:
	@echo "make reports  - set up and run every notebook into $(OUT) (N_USERS=$(N_USERS) SEED=$(SEED))"
	@echo "make test     - set up and run the whole test suite (unit tests + nbval of every notebook)"
	@echo "  options: CONFIG= INPUT= MAPPING= OBSERVATION_DATE= DELIMITER= ENCODING= SEED_OUTCOME= SEED_VALUE="
	@echo "           SEED_IDS= RMST_TAU_DAYS= N_USERS= SEED= ENGINE= JOBS= DATA= OUT= (see README)"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,spark]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))"
	touch $@

setup: $(VENV)/.installed

reports: setup
	$(PY) scripts/run_notebooks.py --kernel $(KERNEL) --data $(DATA) --out $(OUT) \
		--n-users $(N_USERS) --seed $(SEED) --engine $(ENGINE) --jobs $(JOBS) $(if $(MEMORY_BUDGET),--memory-budget $(MEMORY_BUDGET)) \
		$(if $(INPUT),--input '$(INPUT)') $(if $(MAPPING),--mapping '$(MAPPING)') \
		$(if $(CONFIG),--config '$(CONFIG)') $(if $(OBSERVATION_DATE),--observation-date '$(OBSERVATION_DATE)') \
		$(if $(DELIMITER),--delimiter '$(DELIMITER)') $(if $(ENCODING),--encoding '$(ENCODING)') \
		$(if $(SEED_OUTCOME),--seed-outcome '$(SEED_OUTCOME)') $(if $(SEED_VALUE),--seed-value '$(SEED_VALUE)') \
		$(if $(SEED_IDS),--seed-ids '$(SEED_IDS)') $(if $(RMST_TAU_DAYS),--rmst-tau-days '$(RMST_TAU_DAYS)')

# Debian Chromium for the Explorer's browser test; without apt/root the test skips and says why.
browser:
	@bash scripts/install_browser.sh || echo "warning: Chromium not installed; tests/test_explorer_browser.py will skip"

test: setup browser
	rm -rf $(TEST_DATA) $(TEST_REPORTS)
	AUDIENCE_DATA_DIR=$(TEST_DATA) AUDIENCE_REPORTS_DIR=$(TEST_REPORTS) MPLBACKEND=Agg \
		$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider

unit: setup
	$(PY) -m pytest tests

benchmark: setup
	$(PY) scripts/benchmark.py

# Arrow's jemalloc pool returning freed pages at once, as the runner gives every kernel (scripts/run_notebooks.py
# arrow_allocator_env): at 1M users the Explorer held 0.68 instead of 0.97 GB after loading; your own settings win
explorer: setup
	ARROW_DEFAULT_MEMORY_POOL=$${ARROW_DEFAULT_MEMORY_POOL:-jemalloc} \
	JE_ARROW_MALLOC_CONF=$${JE_ARROW_MALLOC_CONF:-dirty_decay_ms:0,muzzy_decay_ms:0} \
	$(PY) -m helpers.explorer --host $(HOST) --port $(PORT) --data $(DATA) --reports $(OUT)

clean:
	rm -rf build $(DATA)/raw $(DATA)/truth $(DATA)/processed $(DATA)/quarantine $(DATA)/exports $(DATA)/.staging
