"""Stand-in for the `cython` module where Cython is not installed (an
installed wheel: its compiled copies never import it), so the pure-Python
data path still imports.  It gives the names hv's annotated modules use
the meaning they have when run uncompiled: types are Python's, decorators
change nothing.
"""
compiled = False

# C types used in annotations: uncompiled, they are plain Python ints.
int = long = longlong = ulonglong = uint = ushort = Py_ssize_t = size_t = bint = int
char = int
p_char = None                   # a pointer: only the compiled copy uses one


class uchar(int):
    """An int; uchar[::1] (a typed memoryview) is a Python memoryview."""
    __class_getitem__ = classmethod(lambda cls, item: memoryview)


def declare(*args, **kwargs):
    """A typed attribute or variable: uncompiled, just a Python name."""
    return None


def _same(f=None, *args, **kwargs):
    return f if callable(f) else _same


cclass = cfunc = ccall = inline = final = _same


def locals(**kwargs):
    return _same


def exceptval(*args, **kwargs):
    return _same
