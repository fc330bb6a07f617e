# One-command set-up: `make test` and `make demo` create .venv and install everything they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test test-browser demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	@# torch's CUDA build makes .venv about 6.2 GB: say so plainly before pip fails half-way with ENOSPC.
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ "$$free_kb" -lt 7000000 ]; then \
	  echo "attnkit setup: only $$((free_kb / 1024)) MB free on the disk of $$(pwd); .venv needs about 6.5 GB (torch + CUDA libraries)" >&2; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,deploy]'
	@# mmengine (full) would bring opencv-python beside albumentations' headless build; keep exactly one.
	@if $(PY) -m pip show -q opencv-python >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y opencv-python && $(PY) -m pip install -q --force-reinstall --no-deps opencv-python-headless; fi
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest tests

# The report of a tiny trained model opened in headless chromium (installed with apt-get when missing and possible;
# see tests/browser/check_report.py for when it skips with exit code 0).
test-browser: setup
	$(PY) tests/browser/check_report.py

demo: setup
	$(PY) -m attnkit.demo

bench: setup
	$(PY) tools/benchmark.py attention

clean:
	rm -rf $(VENV) build *.egg-info
