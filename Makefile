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
# The device data path Cython compiles (setup.py, hv/devices/datapath.py).
DATAPATH := hv/devices/guestmem.py hv/devices/virtqueue.py hv/devices/blk_io.py hv/devices/net_io.py
# The venv's own file, written once when it is made.  (bin/python is a
# symlink that make dates by the system interpreter, which is older than any
# stamp: as a target it would rebuild the venv on every call.)
VENV_MADE := $(VENV)/pyvenv.cfg

.PHONY: run test setup build guests bench docs sloc clean linux-fixture linux-test test-asan test-asan-short coverage

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

# One build_ext makes both: the cffi core and the compiled data path.
$(CORE): .stamp-deps $(CSRC) $(DATAPATH)
	$(PY) setup.py -q build_ext --inplace
	touch $@

guests: .stamp-system
	$(MAKE) -s -C guests

bench: build guests                       ## every benchmark, one JSON line per figure
	$(PY) tools/bench all

linux-fixture: build/linux/vmlinux      ## Debian's kernel + a busybox initramfs (apt-get download)

build/linux/vmlinux: tools/linux-fixture
	$(PYTHON) tools/linux-fixture --out build/linux

linux-test: build guests linux-fixture .stamp-test-deps   ## boot Debian's kernel on hv and QEMU
	HV_LINUX_TESTS=1 $(PY) -m pytest -q tests/test_linux*.py

# The core under AddressSanitizer + UBSan (fatal) as hv._core_asan (HV_CORE
# picks it).  Python is not instrumented, so the runtime is preloaded;
# PYTHONMALLOC=malloc lets ASan see the buffers Python hands the core; leaks
# are the conservation tests' job (the interpreter's own would drown them).
ASAN_ENV   = HV_CORE=asan LD_PRELOAD=$$(gcc -print-file-name=libasan.so) PYTHONMALLOC=malloc \
             ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ASAN_SHORT = tests/test_dispatch.py tests/test_pagewalk.py tests/test_virtio_mmio.py \
             tests/test_reliability.py
ASAN_TESTS = $(ASAN_SHORT) tests/test_virtqueue.py tests/test_devices.py tests/test_engines.py \
             tests/test_cpu_exact.py

build/asan/.built: .stamp-deps $(CSRC) csrc/coverage.c
	$(PY) hv/_build_core.py asan
	touch $@

test-asan: build/asan/.built guests .stamp-test-deps   ## the core under ASan+UBSan: dispatcher, page walker, virtio, devices
	$(ASAN_ENV) $(PY) -m pytest -q $(ASAN_TESTS)

test-asan-short: build/asan/.built guests .stamp-test-deps   ## the part of test-asan CI runs (about a minute)
	$(ASAN_ENV) $(PY) -m pytest -q $(ASAN_SHORT)

# Branch coverage of csrc/ (gcov through gcovr, hv._core_coverage) for the
# whole suite, and of hv/ (coverage.py: the loader's checks) for the tests
# that drive it (tracing all of Python would triple the suite's time); then
# the error exits of the input checks not taken (tools/coverage-report).
# Needs requirements-coverage.txt.
COVERAGE_PY_TESTS = tests/test_loader.py tests/test_linux_initrd.py tests/test_cli.py

.stamp-coverage-deps: .stamp-test-deps requirements-coverage.txt
	$(PIP) install -q -r requirements-coverage.txt
	touch $@

coverage: guests .stamp-coverage-deps    ## branch coverage report: build/coverage/
	rm -rf build/coverage
	$(PY) hv/_build_core.py coverage
	mkdir -p build/coverage/python
	HV_CORE=coverage $(PY) -m pytest -q tests --ignore=tests/test_install.py
	HV_CORE=coverage $(PY) -m coverage run --rcfile=tools/coveragerc -m pytest -q $(COVERAGE_PY_TESTS)
	$(PY) -m coverage combine -q --rcfile=tools/coveragerc
	$(PY) -m coverage json -q --rcfile=tools/coveragerc -o build/coverage/python.json
	$(PY) -m coverage report --rcfile=tools/coveragerc > build/coverage/python.txt
	$(PY) -m gcovr --root . --object-directory build/coverage --filter csrc/ \
	  --gcov-ignore-parse-errors=all \
	  --json build/coverage/csrc.json --txt build/coverage/csrc.txt --txt-metric branch \
	  --html-details build/coverage/index.html --print-summary
	$(PY) tools/coverage-report build/coverage

docs: build                               ## regenerate docs/abi.md and docs/tour.md
	$(PY) tools/gen_abi_doc
	$(PY) tools/tour

sloc:                                     ## lines per layer
	@for d in csrc hv guests tests tools; do \
	  printf '%-8s %6s\n' $$d "$$(find $$d -name '*.[chS]' -o -name '*.py' | grep -v _core | xargs cat | wc -l)"; done

clean:
	rm -rf build hv/_core*.so hv/_core.c hv/devices/_*_compiled*.so .stamp-* 
	$(MAKE) -s -C guests clean
