"""Files that readers see whole or not at all: written to a temporary file beside the target,
flushed to disk, then renamed over it (os.replace is atomic on one file system).

Used for every file dfl writes that another process may read while it is written or that a
kill could leave half-written: checkpoints and JSON of a run directory, the dataset cache, the
HTML report.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(fh)`` on a temporary binary file in ``path``'s directory, then rename it to
    ``path``: a reader finds the old file or the new one, never a part; on any error (also
    KeyboardInterrupt) the temporary file is removed and the old file is left as it was.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> atomic_write(d / "x.txt", lambda fh: fh.write(b"hello")); (d / "x.txt").read_text()
    'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
