"""Copy shmproc's own Markdown documentation to a folder, for offline reading.

``docs.download("some/dir")`` copies the docs into a folder inside the
current project. Writing anywhere else (or to the default location,
``~/Downloads/shmproc-docs``) needs explicit consent, so a stray call can't
litter the user's disk::

    from shmproc import docs
    docs.download("notes/shmproc")            # inside the project: fine
    with docs.Permission():
        docs.download()                         # -> ~/Downloads/shmproc-docs

Where the docs come from: the first folder of :data:`DOCS_SOURCE_DIRS` that
holds any ``.md`` file -- the repository's ``docs/`` folder in a source
checkout (editable install), else the package data ``shmproc/_docs`` that
the build copied into an installed package.
Only the standard library is used.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Literal

__all__ = ["download", "Permission", "find_docs_source", "project_root", "DOCS_SOURCE_DIRS"]

_PACKAGE_DIR = Path(__file__).resolve().parent

# Files or folders that mark the root of a project.
_PROJECT_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg")


def _default_docs_source_dirs() -> tuple[Path, ...]:
    dirs = []
    repo = _PACKAGE_DIR.parent
    # In a source checkout (an editable install) the repository's docs/ is
    # the live guide and comes first; shmproc/_docs is only the snapshot the
    # build copied.  In a normal install the parent is site-packages, whose
    # "docs" folder (if any) would belong to some other distribution.
    if any((repo / name).exists() for name in ("pyproject.toml", "setup.py", "setup.cfg")):
        dirs.append(repo / "docs")
    dirs.append(_PACKAGE_DIR / "_docs")  # package data of a built/installed package
    return tuple(dirs)


#: Folders searched, in order, for the Markdown docs. Tests (or unusual
#: layouts) can replace this tuple; it is read on every call.
DOCS_SOURCE_DIRS: Sequence[Path] = _default_docs_source_dirs()

_DEFAULT_DOWNLOAD_DIR = ("Downloads", "shmproc-docs")  # under the home folder

# Permission is per thread: consent given in one thread must not silently
# allow writes from code running concurrently in another one.
_permission = threading.local()


class Permission:
    """Context manager allowing :func:`download` to write outside the project.

    Re-entrant: nested ``with Permission():`` blocks are fine, and the
    permission lasts until the outermost one exits. It applies to the
    current thread only.
    """

    def __enter__(self) -> "Permission":
        _permission.depth = getattr(_permission, "depth", 0) + 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        _permission.depth -= 1
        return False


def _has_permission() -> bool:
    return getattr(_permission, "depth", 0) > 0


def project_root(start: Union[str, os.PathLike[str], None] = None) -> Path:
    """The nearest ancestor of ``start`` (default: the cwd) that looks like a project root.

    A project root contains ``.git``, ``pyproject.toml``, ``setup.py`` or
    ``setup.cfg``. If no ancestor does, ``start`` itself is returned.
    """
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return folder
    return here


def find_docs_source() -> Path:
    """Return the first folder of :data:`DOCS_SOURCE_DIRS` containing ``.md`` files."""
    for folder in DOCS_SOURCE_DIRS:
        folder = Path(folder)
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*.md")):
            return folder
    searched = ", ".join(str(Path(f)) for f in DOCS_SOURCE_DIRS) or "(none)"
    raise FileNotFoundError(
        f"shmproc's documentation files were not found (searched: {searched}). "
        "The installation seems incomplete: reinstall shmproc, or in a source "
        "checkout make sure the docs/ folder holds the .md files."
    )


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def download(path: Union[str, os.PathLike[str], None] = None) -> Path:
    """Copy the documentation (``.md`` files, subfolders kept) into ``path``.

    ``path`` is created if needed and returned as an absolute Path. It must
    lie inside the current project root (see :func:`project_root`) unless
    the call is made inside ``with docs.Permission():``, which also makes
    ``path`` optional (default ``~/Downloads/shmproc-docs``). Existing files
    of the same name are overwritten.

    Raises PermissionError without permission, FileNotFoundError if the
    docs can't be found, TypeError for a ``path`` that isn't str/PathLike.
    """
    allowed = _has_permission()
    if path is None:
        if not allowed:
            raise PermissionError(
                "docs.download() without a path would write to your Downloads folder; "
                "to allow that, call it inside `with docs.Permission():`, "
                "or pass a folder inside the current project."
            )
        target = Path.home().joinpath(*_DEFAULT_DOWNLOAD_DIR)
    elif isinstance(path, (str, os.PathLike)):
        target = Path(path).expanduser()
    else:
        raise TypeError(f"docs.download() path must be a str or os.PathLike, got {type(path).__name__}")

    # resolve() follows symlinks, so a link inside the project pointing
    # elsewhere counts as "elsewhere".
    target = target.resolve()
    if not allowed:
        root = project_root()
        if not _is_within(target, root):
            raise PermissionError(
                f"docs.download() refuses to write to {target}, which is outside the "
                f"current project ({root}); to allow it, call it inside "
                "`with docs.Permission():`."
            )

    source = find_docs_source().resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"docs.download() target {target} exists and is not a folder; pick another path")
    target.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.rglob("*.md")):
        if not src.is_file():
            continue
        dest = target / src.relative_to(source)
        if dest.resolve() == src:  # downloading onto the source folder itself
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return target
