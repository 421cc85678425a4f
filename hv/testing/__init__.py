"""hv.testing: what hv's own suite tests hypercalls with, for your tests too.

  hv.testing.strategies  Hypothesis strategies from the ABI: hypercall numbers
                         (known, unknown), argument words, guest pointers by
                         kind (valid, unaligned, unmapped, foreign,
                         non-canonical, straddling), whole hypercall programs
  hv.testing.pagetables  a guest page-table builder, and the reference walk
  hv.testing.model       a stateful reference model of the hypercall ABI,
                         extended by subclassing (AbiModel.HYPERCALLS)
  hv.testing.core        the C dispatcher without a guest (Core)
  hv.testing.replay      a generated program through the real replay guest
                         on deterministic TCG, checked and replayed exactly
  hv.testing.boot        boot a kernel, get its GuestRun (console, verdict, trace)
  hv.testing.results     the guests' result lines (SUCCESS/SKIP/ERROR/FAILURE)
  hv.testing.isolate     run risky code in a forked child (a crash is a result)
  hv.testing.plugin      pytest plugin: guest test kernels become test items
                         (pytest -p hv.testing.plugin)

Importing hv.testing itself imports nothing heavy; import the submodule you use.
"""
from hv.testing.boot import GuestRun, assert_passed, boot, boot_isolated, boot_traced
from hv.testing.isolate import fork_call, isolated, run_isolated
from hv.testing.results import RESULT_CODES, VERDICTS, guest_location, parse_result

__all__ = ["GuestRun", "assert_passed", "boot", "boot_isolated", "boot_traced", "fork_call",
           "isolated", "run_isolated", "RESULT_CODES", "VERDICTS", "guest_location",
           "parse_result"]
