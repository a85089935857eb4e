"""benchmarks/_child.py measures a child process's own peak memory in GB (1e9 bytes)."""

import sys

import numpy as np
from _child import max_rss_gb, run_child

ALLOCATED = 400_000_000  # bytes, touched by the child


def _peak_gb(code):
    returncode, _, errors, usage, wall_s = run_child([sys.executable, "-c", code],
                                                     capture_stderr=True)
    assert returncode == 0, errors
    assert wall_s > 0 and usage.ru_utime > 0
    return max_rss_gb(usage.ru_maxrss)


def _allocating(n_bytes):
    return f"import numpy as np; a = np.ones({n_bytes}, dtype=np.uint8)"


def test_child_peak_is_counted_in_gigabytes_of_1e9_bytes():
    # Two children that differ by one touched allocation of ALLOCATED bytes (both peaks are
    # set by their allocations, not by the transient peak of the imports).
    one, two = (_peak_gb(_allocating(n * ALLOCATED)) for n in (1, 2))
    # KiB / 1e6 would give 0.39 GB here, KiB / 2**20 (GiB) 0.37.
    assert 0.399 <= two - one <= 0.405


def test_child_peak_is_its_own_not_that_of_the_process_starting_it():
    held = np.ones(3 * ALLOCATED, dtype=np.uint8)  # this process: over 1.2 GB resident
    try:
        assert _peak_gb(_allocating(ALLOCATED)) < 0.6
    finally:
        del held


def test_child_output_and_exit_code_are_returned():
    returncode, stdout, errors, _, _ = run_child(
        [sys.executable, "-c", "import sys; print('out'); sys.exit(3)"])
    assert (returncode, stdout, errors) == (3, "out\n", None)
    returncode, stdout, errors, _, _ = run_child(
        [sys.executable, "-c", "import sys; print('err', file=sys.stderr)"], capture_stderr=True)
    assert (returncode, stdout, errors) == (0, "", "err\n")
