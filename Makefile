# Two commands on a fresh machine (see README):
#   make train   -> creates .venv on first use, then `jaxseg train` on the synthetic data
#   make test    -> creates .venv on first use, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: train test venv clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(VENV)/bin/jaxseg train $(ARGS)

test: $(STAMP)
	GLIBC_TUNABLES=$${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1} $(VENV)/bin/python -m pytest -n 2 -rs --durations=15 tests $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
