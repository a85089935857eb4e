"""Run a benchmark's child process and read its own resource usage.

Linux gives a new process the peak resident set of the one that started it: at ``exec`` the
kernel records the high-water mark of the memory map it replaces, which after
``vfork`` (what :mod:`subprocess` uses) is the parent's. So a child started from a large
process (a test session, a benchmark that has built its inputs) reports at least that
process's peak. :func:`run_child` therefore starts the command from a small launcher, this
file run as a script, which waits for it and hands its usage back.

Run as a script: ``python _child.py USAGE_FILE COMMAND...`` runs ``COMMAND`` with this
process's standard streams and writes its exit code, wall time and ``os.wait4`` usage to
``USAGE_FILE`` as JSON.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import types

# ``ru_maxrss`` is in KiB on Linux and in bytes on macOS.
_MAXRSS_BYTES = 1 if sys.platform == "darwin" else 1024
_USAGE_FIELDS = ("ru_maxrss", "ru_utime", "ru_stime")


def max_rss_bytes(ru_maxrss):
    """A ``ru_maxrss`` value of ``resource.getrusage`` or ``os.wait4``, in bytes."""
    return ru_maxrss * _MAXRSS_BYTES


def max_rss_gb(ru_maxrss):
    """A ``ru_maxrss`` value of ``resource.getrusage`` or ``os.wait4``, in GB (1e9 bytes)."""
    return max_rss_bytes(ru_maxrss) / 1e9


def run_child(command, *, cwd=None, capture_stderr=False):
    """Run ``command`` to its end; its output and the resources it alone used.

    The command is started from a small launcher (see the module docstring), so that its
    peak is its own and not that of this process; ``os.wait4`` in the launcher gives the
    command's own usage, unlike ``RUSAGE_CHILDREN``, whose peak is the largest of all
    children so far.

    Returns
    -------
    returncode : int
    stdout : str
    stderr : str or None
        None unless ``capture_stderr`` (the child then writes to this process's stderr).
    usage : types.SimpleNamespace
        ``ru_maxrss`` (convert it with :func:`max_rss_gb`), ``ru_utime`` and ``ru_stime``
        (seconds) of the command.
    wall_s : float
        The command's wall time, measured by the launcher.
    """
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(tempfile.TemporaryFile("w+"))
        stderr = files.enter_context(tempfile.TemporaryFile("w+")) if capture_stderr else None
        usage_dir = files.enter_context(tempfile.TemporaryDirectory())
        usage_file = os.path.join(usage_dir, "usage.json")
        launcher = subprocess.run(
            [sys.executable, os.path.abspath(__file__), usage_file, *map(str, command)],
            cwd=cwd, stdout=stdout, stderr=stderr, text=True, check=False)
        if not os.path.exists(usage_file):
            raise RuntimeError(f"the launcher of {command!r} failed (exit code "
                               f"{launcher.returncode}) before starting it")
        with open(usage_file) as handle:
            report = json.load(handle)
        stdout.seek(0)
        errors = None
        if stderr is not None:
            stderr.seek(0)
            errors = stderr.read()
        usage = types.SimpleNamespace(**{field: report[field] for field in _USAGE_FIELDS})
        return report["returncode"], stdout.read(), errors, usage, report["wall_s"]


def _launch(usage_file, command):
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    report = {"returncode": os.waitstatus_to_exitcode(status),
              "wall_s": time.perf_counter() - start,
              **{field: getattr(usage, field) for field in _USAGE_FIELDS}}
    with open(usage_file, "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    _launch(sys.argv[1], sys.argv[2:])
