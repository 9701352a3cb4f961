"""Tests for shmproc.docs (downloading the package's Markdown docs)."""

import os
import threading
from pathlib import Path

import pytest

from shmproc import docs


@pytest.fixture
def fake_docs(tmp_path, monkeypatch):
    """A fake docs source folder that download() copies from."""
    src = tmp_path / "fake_docs"
    (src / "guide").mkdir(parents=True)
    (src / "index.md").write_text("# shmproc\n")
    (src / "guide" / "queue.md").write_text("# Queue\n")
    (src / "notes.txt").write_text("not markdown")
    monkeypatch.setattr(docs, "DOCS_SOURCE_DIRS", (src,))
    return src


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (marked by pyproject.toml); the cwd is a subfolder of it."""
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.chdir(root / "src" / "pkg")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))  # Path.home() on Windows
    return root


def _listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_download_inside_project(fake_docs, project):
    out = docs.download(project / "documentation")
    assert out == (project / "documentation").resolve()
    assert isinstance(out, Path) and out.is_absolute()
    assert _listing(out) == ["guide/queue.md", "index.md"]  # subfolders kept, .txt skipped
    assert (out / "guide" / "queue.md").read_text() == "# Queue\n"


def test_download_relative_path_resolves_against_cwd(fake_docs, project):
    out = docs.download("here")
    assert out == (project / "src" / "pkg" / "here").resolve()
    assert (out / "index.md").is_file()


def test_download_into_project_root_itself(fake_docs, project):
    out = docs.download(str(project))
    assert (out / "index.md").is_file()


def test_download_without_path_is_refused(fake_docs, project):
    with pytest.raises(PermissionError, match=r"with docs\.Permission\(\)"):
        docs.download()
    assert not (Path.home() / "Downloads").exists()


def test_download_outside_project_is_refused(fake_docs, project, tmp_path):
    outside = tmp_path / "elsewhere"
    with pytest.raises(PermissionError, match=r"outside the current project.*docs\.Permission\(\)"):
        docs.download(outside)
    assert not outside.exists()
    with pytest.raises(PermissionError):
        docs.download(project / ".." / "sneaky")  # '..' does not get around the check


def test_symlink_out_of_project_is_refused(fake_docs, project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    link = project / "link"
    try:
        link.symlink_to(outside, target_is_directory=True)
    except OSError:  # pragma: no cover - e.g. Windows without privileges
        pytest.skip("cannot create symlinks here")
    with pytest.raises(PermissionError):
        docs.download(link / "docs")


def test_permission_defaults_to_downloads(fake_docs, project):
    with docs.Permission():
        out = docs.download()
    expected = Path.home() / "Downloads" / "shmproc-docs"
    assert out == expected.resolve()
    assert str(out).startswith(str(Path.home().resolve()))
    assert _listing(out) == ["guide/queue.md", "index.md"]


def test_permission_allows_outside_path(fake_docs, project, tmp_path):
    target = tmp_path / "elsewhere" / "deep"
    with docs.Permission() as perm:
        assert isinstance(perm, docs.Permission)
        out = docs.download(target)
    assert out == target.resolve()
    assert (target / "index.md").is_file()


def test_permission_is_reentrant_and_ends(fake_docs, project, tmp_path):
    perm = docs.Permission()
    with perm:
        with perm:  # the same instance nested
            docs.download(tmp_path / "a")
        docs.download(tmp_path / "b")  # still inside the outer block
        with docs.Permission():
            docs.download(tmp_path / "c")
    with pytest.raises(PermissionError):
        docs.download(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_permission_ends_on_exception(fake_docs, project, tmp_path):
    with pytest.raises(RuntimeError):
        with docs.Permission():
            raise RuntimeError("boom")
    with pytest.raises(PermissionError):
        docs.download(tmp_path / "x")


def test_permission_is_per_thread(fake_docs, project, tmp_path):
    errors = []

    def other_thread():
        try:
            docs.download(tmp_path / "from-thread")
        except PermissionError as e:
            errors.append(e)

    with docs.Permission():
        th = threading.Thread(target=other_thread)
        th.start()
        th.join()
    assert len(errors) == 1
    assert not (tmp_path / "from-thread").exists()


def test_existing_files_are_overwritten(fake_docs, project):
    target = project / "d"
    target.mkdir()
    (target / "index.md").write_text("old")
    (target / "mine.md").write_text("keep me")
    docs.download(target)
    assert (target / "index.md").read_text() == "# shmproc\n"
    assert (target / "mine.md").read_text() == "keep me"


def test_target_that_is_a_file(fake_docs, project):
    (project / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        docs.download(project / "afile")


def test_download_onto_source_folder_is_harmless(project, monkeypatch):
    src = project / "docs"
    src.mkdir()
    (src / "index.md").write_text("# real\n")
    monkeypatch.setattr(docs, "DOCS_SOURCE_DIRS", (src,))
    assert docs.download(src) == src.resolve()
    assert (src / "index.md").read_text() == "# real\n"


@pytest.mark.parametrize("bad", [42, b"bytes", ["x"]])
def test_bad_path_type(fake_docs, project, bad):
    with pytest.raises(TypeError, match="path"):
        docs.download(bad)


# -- where the docs come from ----------------------------------------------------


def test_source_fallback_order(tmp_path, monkeypatch):
    packaged, repo = tmp_path / "_docs", tmp_path / "docs"
    packaged.mkdir()
    repo.mkdir()
    (packaged / "readme.txt").write_text("no markdown here")
    (repo / "index.md").write_text("# repo\n")
    monkeypatch.setattr(docs, "DOCS_SOURCE_DIRS", (packaged, repo))
    assert docs.find_docs_source() == repo  # packaged dir has no .md: fall back
    (packaged / "sub").mkdir()
    (packaged / "sub" / "index.md").write_text("# packaged\n")
    assert docs.find_docs_source() == packaged  # package data wins when present


def test_missing_docs_raise_file_not_found(project, tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "DOCS_SOURCE_DIRS", (tmp_path / "nope", tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="documentation files were not found"):
        docs.find_docs_source()
    with pytest.raises(FileNotFoundError):
        docs.download(project / "out")
    assert not (project / "out").exists()  # nothing created on failure


def test_default_source_dirs_prefer_the_checkout_then_package_data():
    package_dir = Path(docs.__file__).resolve().parent
    assert docs.DOCS_SOURCE_DIRS[-1] == package_dir / "_docs"
    if (package_dir.parent / "pyproject.toml").exists():      # a source checkout
        assert docs.DOCS_SOURCE_DIRS[0] == package_dir.parent / "docs"
    assert len(docs.DOCS_SOURCE_DIRS) <= 2


# -- project root ------------------------------------------------------------------


@pytest.mark.parametrize("marker", [".git", "pyproject.toml", "setup.py", "setup.cfg"])
def test_project_root_markers(tmp_path, monkeypatch, marker):
    root = tmp_path / "r"
    deep = root / "a" / "b"
    deep.mkdir(parents=True)
    if marker == ".git":
        (root / ".git").mkdir()
    else:
        (root / marker).write_text("")
    monkeypatch.chdir(deep)
    assert docs.project_root() == root.resolve()
    assert docs.project_root(deep) == root.resolve()


def test_project_root_nearest_wins(tmp_path, monkeypatch):
    outer = tmp_path / "outer"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    (outer / "setup.py").write_text("")
    (inner / "setup.cfg").write_text("")
    monkeypatch.chdir(inner)
    assert docs.project_root() == inner.resolve()


def test_project_root_defaults_to_cwd(tmp_path, monkeypatch):
    here = (tmp_path / "plain").resolve()
    here.mkdir()
    if any((p / m).exists() for p in here.parents for m in (".git", "pyproject.toml", "setup.py", "setup.cfg")):
        pytest.skip("the temporary folder lies inside a project")
    monkeypatch.chdir(here)
    assert docs.project_root() == here
    # Without a project, only the cwd and below are writable.
    monkeypatch.setattr(docs, "DOCS_SOURCE_DIRS", (tmp_path / "s",))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.md").write_text("x")
    assert (docs.download("out") / "x.md").is_file()
    with pytest.raises(PermissionError):
        docs.download(tmp_path / "sibling")


def test_module_docstring_and_exports():
    assert docs.__doc__
    for name in ("download", "Permission"):
        assert name in docs.__all__
    assert os.path.basename(docs.__file__) == "docs.py"
