"""Repository paths that come from outside (agents, settings), made safe to put in a URL.

A path an agent supplies ends up in ``/repos/{owner}/{repo}/contents/{path}`` requested with the
project's credential. ``quote()`` keeps ``/`` and ``..`` and HTTP clients collapse dot segments, so an
unchecked ``../../other/repo/contents/x`` would read another repository. Every such path goes
through :func:`repo_path` (a plain repository-relative path or a refusal) and :func:`contents_url`
(each segment quoted with ``safe=""``, the result asserted to stay under the contents prefix).
"""
from __future__ import annotations

import re
from urllib.parse import quote, unquote

MAX_PATH = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePath(ValueError):
    """A path that is not a plain repository-relative path; the message says why."""


def _decoded_forms(segment: str):
    """The segment and what it decodes to under (repeated) percent-decoding."""
    seen = segment
    yield seen
    for _ in range(3):
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded
        yield seen


def repo_path(path: str, *, allow_root: bool = False) -> str:
    """``path`` checked as a repository-relative path (``a/b.txt``); '' only with ``allow_root``.

    Refused: a leading ``/``, ``\\``, control characters, empty, ``.`` or ``..`` segments, and the
    same in percent-encoded form. A trailing ``/`` (a folder) is dropped.
    """
    if not isinstance(path, str):
        raise UnsafePath("path must be a string")
    if len(path) > MAX_PATH:
        raise UnsafePath(f"path is longer than {MAX_PATH} characters")
    if path.endswith("/") and len(path) > 1:
        path = path[:-1]
    if path == "":
        if allow_root:
            return ""
        raise UnsafePath("path is required")
    if path.startswith("/"):
        raise UnsafePath("path must be relative to the repository root (no leading /)")
    for segment in path.split("/"):
        for form in _decoded_forms(segment):
            if "\\" in form:
                raise UnsafePath("path must not contain a backslash")
            if _CONTROL.search(form):
                raise UnsafePath("path must not contain control characters")
            if form in ("", ".", "..") or (form is not segment and "/" in form):
                raise UnsafePath(f"path must not contain empty, '.' or '..' segments: {path!r}")
    return path


def contents_url(repo: str, path: str, *, allow_root: bool = False) -> str:
    """``/repos/{repo}/contents/{path}`` with every segment quoted; raises UnsafePath."""
    path = repo_path(path, allow_root=allow_root)
    prefix = f"/repos/{repo}/contents/"
    if not path:
        return prefix[:-1]
    url = prefix + "/".join(quote(segment, safe="") for segment in path.split("/"))
    # Belt and braces: whatever the checks above missed must not leave the repository's contents.
    if not url.startswith(prefix) or any(s in ("", ".", "..") for s in url[len(prefix):].split("/")):
        raise UnsafePath(f"path leaves the repository: {path!r}")
    return url


def protected_prefix(path: str, protected: list[str] | tuple[str, ...]) -> str | None:
    """The protected entry ``path`` falls under (case-insensitive, as on GitHub's file systems), else None.

    An entry ending in ``/`` protects a folder; any other entry protects that exact file.
    """
    lowered = path.lower()
    for entry in protected:
        entry_l = entry.lower()
        if (entry_l.endswith("/") and (lowered.startswith(entry_l) or lowered == entry_l.rstrip("/"))) \
                or lowered == entry_l:
            return entry
    return None
