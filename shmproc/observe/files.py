"""Write a file whole or not at all, with errors that say what to do.

A trace or a plot of a long run can take seconds to write; a reader (or a
crash) in the middle must never see half of it at the destination. So the
bytes go to a hidden temporary file in the destination's own folder (the
same file system, so the final step is an atomic rename), and os.replace
puts it in place only once it is complete. On any failure the temporary
file is removed and the destination is left as it was.

The temporary file is created with mode 0o666 filtered by the umask, like
any ``open(path, "w")``: tempfile's private 0o600 would leave a trace
file that only its writer can read.
"""
from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["destination", "write_whole"]


def destination(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, checked before any slow work: OSError if it cannot be written.

    ``what`` names the file for the message ("the Chrome trace").
    """
    target = Path(os.fspath(path))
    if target.is_dir():
        raise _unwritable(target, what, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    if not target.parent.is_dir():
        raise _unwritable(target, what, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
    return target


def write_whole(path: Path, what: str, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then move it to ``path``; return ``path``.

    An OSError on the way is raised again as one that names ``path`` and
    says what to do, with the original as its cause.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as file:
                write(file)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise _unwritable(path, what, exc) from exc
    return path


def _unwritable(path: Path, what: str, cause: OSError) -> OSError:
    # OSError(errno, message) builds the matching subclass (FileNotFoundError,
    # PermissionError, ...), so callers can still catch the precise kind.
    code = cause.errno or 0
    if code == errno.ENOENT:
        advice = f"the folder {path.parent} does not exist; create it first or choose another path"
    elif code == errno.EISDIR:
        advice = "it is a folder; give the path of a file (in that folder or elsewhere)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = f"no permission to write in {path.parent}; choose a folder you can write to"
    elif code == errno.ENOTDIR:
        advice = "a part of the path is a file, not a folder; choose another path"
    elif code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        advice = "the disk (or your quota) is full; free some space or choose another disk"
    else:
        advice = f"{cause.strerror or cause}; choose another path"
    return OSError(code, f"cannot write {what} to {path}: {advice}")

