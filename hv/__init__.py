"""hv: a paravirtualizing microkernel-style hypervisor.

The C core (csrc/, imported as hv._core) runs partitions' vCPUs and finishes
fast hypercalls; this package is the parent partition: it loads kernels,
serves the slow hypercalls and devices, and manages partitions' lifecycle.
Import what you need from the submodules (hv.partition, hv.loader, hv.cli);
this file stays empty so `python -m hv` starts fast.
"""

__version__ = "0.1.0"
