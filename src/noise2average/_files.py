"""Temporary files for atomic writes (standard library only, so training can use it)."""

import os
import tempfile
from pathlib import Path


def temporary_beside(path, suffix):
    """Create an empty temporary file in ``path``'s folder, for writing and renaming to ``path``.

    The folder is created if needed. The file gets the permissions a plain ``open`` would
    give (0o666 less the umask) rather than ``mkstemp``'s owner-only 0o600, so that a renamed
    result is as readable as any other output.

    Returns
    -------
    handle : int
        Open file descriptor of the temporary file.
    temporary : Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                         dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)
    return handle, Path(temporary)
