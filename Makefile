# make run          start the daemon for this directory in the foreground (PROJECT=dir for another)
# make test         the whole suite, against the newest releases of every dependency
# make test-oldest  the tests that exercise each dependency hook, against the declared lower bounds
# All bootstrap their venv on first use.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OLDEST  := .venv-oldest
PROJECT ?= $(CURDIR)
PYTEST_ARGS ?=
# The oldest-versions run: everything that exercises a private hook (docs/compatibility.md),
# the watcher, the supervisor and the socket.
OLDEST_TESTS ?= tests/core tests/daemon tests/test_compat.py tests/test_packaging.py tests/test_client.py \
	tests/e2e/test_lifecycle.py tests/e2e/test_jsonrpc_socket.py tests/e2e/test_automation.py \
	tests/e2e/test_tasks.py tests/e2e/test_messaging.py tests/e2e/test_remote.py

# The editable install links each module into build/ (setuptools' strict mode:
# the only one that puts twisted/plugins/aiwg_plugin.py where Twisted's plugin
# scan looks, from any directory). A module added or removed needs a reinstall,
# so the list of modules is a prerequisite, rewritten only when it changes.
MODULES := build/.modules
$(shell mkdir -p build && find aiwg twisted -name '*.py' -o -name '*.json' | LC_ALL=C sort > $(MODULES).new \
	&& (cmp -s $(MODULES).new $(MODULES) || mv $(MODULES).new $(MODULES)); rm -f $(MODULES).new)

# $(1): the venv; $(2): extra pip arguments (constraints)
define install
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	# setuptools' one notice for strict mode says where the link tree is: build/, as above.
	PYTHONWARNINGS="ignore:Editable installation" \
		$(1)/bin/python -m pip install --quiet $(2) -e '.[test]' --config-settings editable_mode=strict
	$(1)/bin/python -c "from twisted.plugin import IPlugin, getPlugins; import twisted.plugins; list(getPlugins(IPlugin, twisted.plugins))"
	$(1)/bin/python -m pip check
endef

.PHONY: run test test-oldest bench install constraints clean

$(STAMP): pyproject.toml setup.cfg $(MODULES)
	$(call install,$(VENV),)
	touch $(STAMP)

$(OLDEST)/.installed: pyproject.toml setup.cfg constraints/oldest.txt $(MODULES)
	$(call install,$(OLDEST),--constraint constraints/oldest.txt)
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/aiwg daemon start --foreground --project "$(PROJECT)"

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest $(OLDEST_TESTS) $(PYTEST_ARGS)

constraints:
	$(PYTHON) constraints/generate.py

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(OLDEST) build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f twisted/plugins/dropin.cache
