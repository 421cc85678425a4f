# hv - the two commands a newcomer needs are `make run` and `make test`.
# Everything lands in .venv (Python packages) and build directories that
# `make clean` removes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
HV     := $(VENV)/bin/hv
CORE   := hv/_core.abi3.so
CSRC   := $(wildcard csrc/*.c csrc/*.h csrc/include/hv/*.h) hv/_build_core.py
# The venv's own file, written once when it is made.  (bin/python is a
# symlink that make dates by the system interpreter, which is older than any
# stamp: as a target it would rebuild the venv on every call.)
VENV_MADE := $(VENV)/pyvenv.cfg

.PHONY: run test setup build guests bench docs sloc clean linux-fixture linux-test

run: build guests                         ## set up, build, boot the hello guest
	$(HV) run guests/build/hello.elf

test: build guests .stamp-test-deps       ## set up, build, run the whole suite
	$(PY) -m pytest -q tests

setup: $(HV)                              ## .venv with hv's packages and the hv command

.stamp-system:
	@echo "hv setup: system packages (tools/setup-system)"
	tools/setup-system
	touch $@

# Order-only: a newer .stamp-system does not make the venv again.
$(VENV_MADE): | .stamp-system
	@echo "hv setup: creating $(VENV)"
	$(PYTHON) -m venv $(VENV)

.stamp-deps: $(VENV_MADE) requirements.txt
	@echo "hv setup: Python packages (requirements.txt) into $(VENV)"
	$(PIP) install --progress-bar on -r requirements.txt
	touch $@

.stamp-test-deps: .stamp-deps requirements-test.txt
	@echo "hv setup: test packages (requirements-test.txt) into $(VENV)"
	$(PIP) install --progress-bar on -r requirements-test.txt
	touch $@

# The hv command: this tree installed in editable mode (Python changes need
# no reinstall; the C core is rebuilt by `make build`).
$(HV): .stamp-deps pyproject.toml setup.py
	@echo "hv setup: the hv command ($(HV), editable install of this tree)"
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

build: $(CORE) $(HV)

$(CORE): .stamp-deps $(CSRC)
	$(PY) setup.py -q build_ext --inplace

guests: .stamp-system
	$(MAKE) -s -C guests

bench: build guests                       ## every benchmark, one JSON line per figure
	$(PY) tools/bench all

linux-fixture: build/linux/vmlinux      ## Debian's kernel + a busybox initramfs (apt-get download)

build/linux/vmlinux: tools/linux-fixture
	$(PYTHON) tools/linux-fixture --out build/linux

linux-test: build guests linux-fixture .stamp-test-deps   ## boot Debian's kernel on hv and QEMU
	$(PY) -m pytest -q tests/test_linux*.py

docs: build                               ## regenerate docs/abi.md and docs/tour.md
	$(PY) tools/gen_abi_doc
	$(PY) tools/tour

sloc:                                     ## lines per layer
	@for d in csrc hv guests tests tools; do \
	  printf '%-8s %6s\n' $$d "$$(find $$d -name '*.[chS]' -o -name '*.py' | grep -v _core | xargs cat | wc -l)"; done

clean:
	rm -rf build hv/_core*.so hv/_core.c .stamp-* 
	$(MAKE) -s -C guests clean
