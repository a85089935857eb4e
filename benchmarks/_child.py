"""Run a benchmark's child process and read its own resource usage."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time

# ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024


def max_rss_gb(ru_maxrss):
    """A ``ru_maxrss`` value of ``resource.getrusage`` or ``os.wait4``, in GB (1e9 bytes)."""
    return ru_maxrss * _MAXRSS_BYTES / 1e9


def run_child(command, *, cwd=None, capture_stderr=False):
    """Run ``command`` to its end; its output and the resources it alone used.

    ``os.wait4`` gives the child's own usage (convert its ``ru_maxrss`` with
    :func:`max_rss_gb`), unlike ``RUSAGE_CHILDREN``, whose peak is the largest of all
    children so far.

    Returns
    -------
    returncode : int
    stdout : str
    stderr : str or None
        None unless ``capture_stderr`` (the child then writes to this process's stderr).
    usage : resource.struct_rusage
    wall_s : float
    """
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(tempfile.TemporaryFile("w+"))
        stderr = files.enter_context(tempfile.TemporaryFile("w+")) if capture_stderr else None
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.perf_counter() - start
        stdout.seek(0)
        errors = None
        if stderr is not None:
            stderr.seek(0)
            errors = stderr.read()
        return os.waitstatus_to_exitcode(status), stdout.read(), errors, usage, wall_s
