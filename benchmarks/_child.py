"""Run a benchmark's child process and read its own resource usage."""

import os
import subprocess
import tempfile
import time


def run_child(command, *, cwd=None, capture_stderr=False):
    """Run ``command`` to its end; its output and the resources it alone used.

    ``os.wait4`` gives the child's own usage (``ru_maxrss`` in KiB on Linux), unlike
    ``RUSAGE_CHILDREN``, whose peak is the largest of all children so far.

    Returns
    -------
    returncode : int
    stdout : str
    stderr : str or None
        None unless ``capture_stderr`` (the child then writes to this process's stderr).
    usage : resource.struct_rusage
    wall_s : float
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, cwd=cwd, stdout=stdout, text=True,
                                 stderr=stderr if capture_stderr else None)
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        return (os.waitstatus_to_exitcode(status), stdout.read(),
                stderr.read() if capture_stderr else None, usage, wall_s)
