# hv - the two commands a newcomer needs are `make run` and `make test`.
# Everything lands in .venv (Python packages) and build directories that
# `make clean` removes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CORE   := hv/_core.abi3.so
CSRC   := $(wildcard csrc/*.c csrc/*.h csrc/include/hv/*.h) hv/_build_core.py

.PHONY: run test setup build guests bench docs sloc clean linux-fixture linux-test

run: build guests                         ## set up, build, boot the hello guest
	$(PY) -m hv run guests/build/hello.elf

test: build guests .stamp-test-deps       ## set up, build, run the whole suite
	$(PY) -m pytest -q tests

setup: .stamp-deps

.stamp-system:
	tools/setup-system
	touch $@

$(PY): .stamp-system
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.stamp-deps: $(PY) requirements.txt
	$(PY) -m pip install -q -r requirements.txt
	touch $@

.stamp-test-deps: .stamp-deps requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

build: $(CORE)

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
