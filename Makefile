# make run   start the daemon for this directory in the foreground (PROJECT=dir for another)
# make test  the whole suite
# Both bootstrap .venv on first use.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROJECT ?= $(CURDIR)
PYTEST_ARGS ?=

.PHONY: run test bench install clean lint

$(STAMP): pyproject.toml setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=68" wheel
	# compat mode puts the checkout itself on sys.path, so Twisted's plugin
	# scan finds twisted/plugins/aiwg_plugin.py (the default editable finder hides it).
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	$(BIN)/python -c "from twisted.plugin import IPlugin, getPlugins; import twisted.plugins; list(getPlugins(IPlugin, twisted.plugins))"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/aiwg daemon start --foreground --project "$(PROJECT)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f twisted/plugins/dropin.cache
