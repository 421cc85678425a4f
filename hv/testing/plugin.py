"""pytest plugin: guest test kernels become pytest items.

    pytest -p hv.testing.plugin          (or installed: the `pytest11` entry point)

Configure in pytest.ini / pyproject's [tool.pytest.ini_options]:

    hv_kernels =            # globs, relative to the ini file's directory
        guests/build/hcall-selftest.elf
        guests/build/verdict.elf
    hv_kernel_cmdlines =    # optional: "NAME: CMDLINE", one item each (else one, empty)
        verdict: success
        verdict: skip
    hv_engines = tcg kvm    # default; an engine this host lacks is skipped with its reason
    hv_deterministic = true # default: TCG counts instructions, so a run repeats exactly
    hv_timeout = 60         # seconds per boot

or on the command line: --hv-kernels GLOB (repeatable), --hv-engine NAME.

Each kernel x command line x engine is one item, `name[cmdline-engine]`.
It boots in a forked child (a crash of the core is a failure, not the end
of the session), and its result line is the outcome:

    SUCCESS   passed           (a kernel without a result line: exit code 0)
    SKIP      skipped, with the guest's reason
    ERROR     an error          (the test or its environment is broken)
    FAILURE   failed, reported at the guest's file:line (GUEST_ASSERT)

A failure's report carries the console and the end of the decoded trace.
"""
import fnmatch
import glob
import os
from pathlib import Path

import pytest

# hv's own modules are imported where they are used: an installed plugin
# loads in every pytest session, most of which never boot a guest.
TRACE_TAIL = 60                  # trace lines attached to a failure report


def pytest_addoption(parser):
    group = parser.getgroup("hv", "hv guest test kernels")
    group.addoption("--hv-kernels", action="append", default=[], metavar="GLOB",
                    help="collect these guest kernels as test items (repeatable)")
    group.addoption("--hv-engine", action="append", default=[], metavar="NAME",
                    help="engines to run kernels on (default: hv_engines, or tcg and kvm)")
    parser.addini("hv_kernels", "globs of guest test kernels to collect", type="linelist")
    parser.addini("hv_kernel_cmdlines", "NAME: CMDLINE lines, one item each", type="linelist")
    parser.addini("hv_engines", "engines to run kernels on", default="tcg kvm")
    parser.addini("hv_deterministic", "run TCG deterministically", type="bool", default=True)
    parser.addini("hv_timeout", "seconds per boot", default="60")


def _kernel_globs(config):
    base = os.path.dirname(str(config.inipath)) if config.inipath else str(config.rootpath)
    globs = config.getoption("hv_kernels") + config.getini("hv_kernels")
    return [g if os.path.isabs(g) else os.path.join(base, g) for g in globs]


def pytest_configure(config):
    config.addinivalue_line("markers", "hv_engine(name): the engine a guest kernel item runs on")


@pytest.hookimpl(tryfirst=True)       # before -k / -m deselect
def pytest_collection_modifyitems(session, config, items):
    """Kernels named by --hv-kernels, or by the ini when pytest runs the
    whole directory (no paths, or the ini's directory or one above it), are
    collected even when no test path holds them: added once, after the rest."""
    if config.args_source == pytest.Config.ArgsSource.ARGS and not config.getoption("hv_kernels"):
        home = os.path.dirname(str(config.inipath)) if config.inipath else str(config.rootpath)
        named = [os.path.abspath(str(a).split("::")[0]) for a in config.args]
        if not any(home == a or home.startswith(a.rstrip(os.sep) + os.sep) for a in named):
            return
    seen = {str(getattr(item, "kernel", "")) for item in items}
    paths = sorted({os.path.abspath(p) for g in _kernel_globs(config) for p in glob.glob(g)})
    for path in paths:
        if path not in seen:
            node = KernelFile.from_parent(session, path=Path(path),
                                          nodeid=os.path.relpath(path, config.rootpath))
            items.extend(node.collect())


def pytest_collect_file(parent, file_path):
    """An .elf under a test path that an hv_kernels glob names."""
    if file_path.suffix != ".elf":
        return None
    if any(fnmatch.fnmatch(str(file_path), os.path.abspath(g)) for g in _kernel_globs(parent.config)):
        return KernelFile.from_parent(parent, path=file_path)
    return None


def _cmdlines(config, name):
    out = []
    for line in config.getini("hv_kernel_cmdlines"):
        kernel, sep, cmdline = line.partition(":")
        if sep and kernel.strip() == name:
            out.append(cmdline.strip())
    return out or [""]


def _engines(config):
    return config.getoption("hv_engine") or config.getini("hv_engines").split()


class KernelFile(pytest.File):
    """One kernel image: an item per command line and engine."""

    def collect(self):
        from hv.partition import engine_status

        name = self.path.name.removesuffix(".elf")
        for cmdline in _cmdlines(self.config, name):
            for engine in _engines(self.config):
                label = f"{cmdline}-{engine}" if cmdline else engine
                item = KernelItem.from_parent(self, name=f"{name}[{label}]", cmdline=cmdline,
                                              engine=engine)
                item.add_marker(pytest.mark.hv_engine(engine))
                ok, why = engine_status(engine)
                if not ok:
                    item.add_marker(pytest.mark.skip(reason=f"{engine} engine unavailable: {why}"))
                yield item


class GuestError(Exception):
    """The kernel said ERROR: the test or its environment is broken."""


class GuestFailure(Exception):
    """The kernel said FAILURE (or crashed, or gave no result)."""


class KernelItem(pytest.Item):
    def __init__(self, *, cmdline, engine, **kw):
        super().__init__(**kw)
        self.kernel = self.path
        self.cmdline = cmdline
        self.engine = engine
        self.run = None

    def setup(self):
        # The boot happens here so an ERROR verdict is reported as an error
        # (pytest's word for a broken setup), not as a failure.
        from hv.testing.boot import boot_isolated
        from hv.testing.results import parse_result

        deterministic = self.engine == "tcg" and self.config.getini("hv_deterministic")
        timeout = int(self.config.getini("hv_timeout"))
        try:
            self.run = boot_isolated(str(self.kernel), self.cmdline, engine=self.engine,
                                     timeout=timeout, deterministic=deterministic,
                                     trace_tail=TRACE_TAIL)
        except RuntimeError as e:       # the child crashed or hung
            raise GuestFailure(str(e)) from None
        self._attach()
        verdict, detail = parse_result(self.run.console)
        if verdict == "ERROR":
            raise GuestError(f"guest ERROR: {detail}")

    def runtest(self):
        from hv.testing.results import RESULT_CODES, guest_location, parse_result

        run = self.run
        verdict, detail = parse_result(run.console)
        if verdict == "SKIP":
            # Reported at the kernel, not at this line of the plugin.
            raise pytest.skip.Exception(f"guest SKIP: {detail}", _use_item_location=True)
        if verdict == "FAILURE":
            where = guest_location(detail)
            if where:                   # "FAILURE: file.c:42: expr" -> "at file.c:42: expr"
                detail = detail.split(":", 2)[2].strip()
                raise GuestFailure(f"guest FAILURE at {where[0]}:{where[1]}: {detail}")
            raise GuestFailure(f"guest FAILURE: {detail}")
        if run.state != "shutdown":
            raise GuestFailure(f"the partition ended {run.state}"
                               + (f": {run.crash_report.splitlines()[0]}" if run.crash_report else ""))
        want = RESULT_CODES[verdict] if verdict else 0
        if run.exit_code != want:
            raise GuestFailure(f"{verdict or 'no result line'} but shutdown code {run.exit_code}"
                               f" (expected {want})")

    def _attach(self):
        run = self.run
        self.add_report_section("call", "guest console", run.console or "(empty)\n")
        if run.crash_report:
            self.add_report_section("call", "crash report", run.crash_report + "\n")
        tail = run.trace_lines[-TRACE_TAIL:]
        self.add_report_section("call", "hv trace", f"(the last {len(tail)} lines)\n"
                                + "\n".join(tail) + "\n")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (GuestError, GuestFailure)):
            run = self.run
            lines = [str(excinfo.value), f"kernel: {self.kernel}", f"engine: {self.engine}"
                     + (" (deterministic)" if self.engine == "tcg" else ""),
                     f"cmdline: {self.cmdline!r}"]
            if run is not None:
                lines.append(f"state={run.state} exit_code={run.exit_code}")
                lines.append("replay: python -m hv trace --engine " + self.engine
                             + (" --deterministic" if self.engine == "tcg" else "")
                             + (f" --cmdline '{self.cmdline}'" if self.cmdline else "")
                             + f" {self.kernel}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"guest kernel {self.name}"
