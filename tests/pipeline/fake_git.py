"""FakeGitHub plus what the task pipeline calls: the repository, the Git Data API (refs, commits,
blobs, trees), pull requests opened/edited through the API, their diffs, and contents listings.

A tiny object store: blobs (sha -> text), trees (sha -> {path: blob sha}, flat), commits (sha ->
{tree, parents, message}) and refs ("heads/<branch>" -> commit sha). A pull request's head follows
its branch's ref; a merge moves the base branch to the head commit.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from typing import Any

from tests.github.fake_github import BOT_LOGIN, DOCS, FakeGitHub, FakeRepo, _Answer

NOT_FOUND = {"message": "Not Found", "documentation_url": DOCS}


def _sha(kind: str, payload: Any) -> str:
    return hashlib.sha1(f"{kind}:{json.dumps(payload, sort_keys=True)}".encode()).hexdigest()


class GitStore:
    def __init__(self, files: dict[str, str], default_branch: str):
        self.blobs: dict[str, str] = {}
        self.trees: dict[str, dict[str, str]] = {}
        self.commits: dict[str, dict] = {}
        self.refs: dict[str, str] = {}
        tree = self.tree({path: self.blob(text) for path, text in files.items()})
        self.refs[f"heads/{default_branch}"] = self.commit(tree, [], "Initial commit")

    def blob(self, text: str) -> str:
        sha = _sha("blob", text)
        self.blobs[sha] = text
        return sha

    def tree(self, entries: dict[str, str]) -> str:
        sha = _sha("tree", entries)
        self.trees[sha] = dict(entries)
        return sha

    def commit(self, tree: str, parents: list[str], message: str) -> str:
        sha = _sha("commit", {"tree": tree, "parents": parents, "message": message, "n": len(self.commits)})
        self.commits[sha] = {"tree": tree, "parents": list(parents), "message": message}
        return sha

    def files_at(self, ref_or_sha: str) -> dict[str, str]:
        sha = self.refs.get(f"heads/{ref_or_sha}", ref_or_sha)
        commit = self.commits.get(sha)
        if commit is None:
            return {}
        return {path: self.blobs[blob] for path, blob in self.trees[commit["tree"]].items()}


class FakeGit(FakeGitHub):
    """The fake GitHub with a Git object store per repository (``self.git[full_name.lower()]``)."""

    def __init__(self, **kwargs):
        self.git: dict[str, GitStore] = {}
        super().__init__(**kwargs)

    def add_repo(self, full_name: str, default_branch: str = "main", installation_id: str | None = None,
                 files: dict[str, str] | None = None) -> FakeRepo:
        repo = super().add_repo(full_name, default_branch, installation_id)
        repo.files.update(files or {"README.md": "# Hello\n"})
        self.git[full_name.lower()] = GitStore(repo.files, default_branch)
        return repo

    # --- test helpers ---------------------------------------------------------------------------
    def branch_files(self, full_name: str, branch: str) -> dict[str, str]:
        with self.lock:
            return self.git[full_name.lower()].files_at(branch)

    def ref(self, full_name: str, branch: str) -> str | None:
        with self.lock:
            return self.git[full_name.lower()].refs.get(f"heads/{branch}")

    def commit_of(self, full_name: str, sha: str) -> dict | None:
        with self.lock:
            return self.git[full_name.lower()].commits.get(sha)

    # --- plumbing -------------------------------------------------------------------------------
    def _send(self, handler, status: int, payload: Any, headers: dict | None = None) -> None:
        headers = dict(headers or {})
        if isinstance(payload, str) and headers.get("Content-Type", "").startswith("text/"):
            # FakeGitHub sends str bodies as JSON unless they are raw file contents.
            headers["Content-Type"] = "application/vnd.github.raw; charset=utf-8"
            headers["X-Fake-Original-Content-Type"] = "text/x-diff"
        super()._send(handler, status, payload, headers)

    def _route(self, method: str, path: str, query: dict, body: Any, headers) -> tuple[int, Any, dict]:
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if m:
            self._require_token(headers)
            repo = self._repo(m.group(1), m.group(2))
            git = self.git.get(repo.full_name.lower())
            rest = m.group(3) or ""
            if git is not None:
                answer = self._git_route(repo, git, method, rest, query, body or {}, headers)
                if answer is not None:
                    return answer
        return super()._route(method, path, query, body, headers)

    def _git_route(self, repo: FakeRepo, git: GitStore, method: str, rest: str, query: dict, body: dict,
                   headers):
        def hit(verb: str, pattern: str):
            return re.fullmatch(pattern, rest) if verb == method else None

        if hit("GET", r"/?"):
            return 200, {"id": repo.id, "name": repo.full_name.split("/")[1], "full_name": repo.full_name,
                         "default_branch": repo.default_branch, "private": False}, {}
        if m := hit("GET", r"/git/ref/(heads/.+)"):
            return self._ref_answer(git, m.group(1))
        if m := hit("PATCH", r"/git/refs/(heads/.+)"):
            name = m.group(1)
            if name not in git.refs:
                return 422, {"message": "Reference does not exist", "documentation_url": DOCS}, {}
            new = body.get("sha")
            if new not in git.commits:
                return 422, {"message": "Object does not exist", "documentation_url": DOCS}, {}
            if not body.get("force") and not self._descends(git, new, git.refs[name]):
                return 422, {"message": "Update is not a fast forward", "documentation_url": DOCS}, {}
            git.refs[name] = new
            self._follow_heads(repo, name[len("heads/"):], new)
            return self._ref_answer(git, name)
        if hit("POST", r"/git/refs"):
            ref, sha = body.get("ref") or "", body.get("sha")
            if not ref.startswith("refs/heads/") or sha not in git.commits:
                return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
            name = ref[len("refs/"):]
            if name in git.refs:
                return 422, {"message": "Reference already exists", "documentation_url": DOCS}, {}
            git.refs[name] = sha
            status, payload, extra = self._ref_answer(git, name)
            return 201, payload, extra
        if m := hit("GET", r"/git/commits/([0-9a-f]{40})"):
            commit = git.commits.get(m.group(1))
            if commit is None:
                return 404, NOT_FOUND, {}
            return 200, self._commit_answer(m.group(1), commit), {}
        if hit("POST", r"/git/blobs"):
            content = body.get("content")
            if not isinstance(content, str) or body.get("encoding", "utf-8") != "utf-8":
                return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
            return 201, {"sha": git.blob(content), "url": "blob"}, {}
        if hit("POST", r"/git/trees"):
            entries = dict(git.trees.get(body.get("base_tree") or "", {}))
            if body.get("base_tree") and body["base_tree"] not in git.trees:
                return 422, {"message": "base_tree is not a tree", "documentation_url": DOCS}, {}
            for entry in body.get("tree") or []:
                if entry.get("sha") is None and "content" not in entry:
                    entries.pop(entry["path"], None)
                elif "content" in entry:
                    entries[entry["path"]] = git.blob(entry["content"])
                elif entry["sha"] in git.blobs:
                    entries[entry["path"]] = entry["sha"]
                else:
                    return 422, {"message": f"tree.sha {entry['sha']} is not a valid blob",
                                 "documentation_url": DOCS}, {}
            sha = git.tree(entries)
            return 201, {"sha": sha, "tree": [{"path": p, "type": "blob", "sha": s} for p, s in entries.items()]}, {}
        if hit("POST", r"/git/commits"):
            tree, parents = body.get("tree"), body.get("parents") or []
            if tree not in git.trees or any(p not in git.commits for p in parents):
                return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
            sha = git.commit(tree, parents, body.get("message") or "")
            return 201, self._commit_answer(sha, git.commits[sha]), {}
        if hit("POST", r"/pulls"):
            return self._open_pull(repo, git, body)
        if m := hit("PATCH", r"/pulls/(\d+)"):
            pull = self._pull(repo, m.group(1))
            changes = {k: v for k, v in body.items() if k in ("title", "body", "state")}
            return 200, repo.touch(pull, **changes), {}
        if (m := hit("GET", r"/pulls/(\d+)")) and "diff" in (headers.get("Accept") or ""):
            pull = self._pull(repo, m.group(1))
            return 200, self._diff(git, pull), {"Content-Type": "text/x-diff; charset=utf-8"}
        if m := hit("GET", r"/contents/?(.*)"):
            path = m.group(1).strip("/")
            files = git.files_at(query.get("ref") or repo.default_branch)
            if path in files:
                return None  # a file: FakeGitHub answers from repo.files
            prefix = f"{path}/" if path else ""
            names: dict[str, str] = {}
            for name in files:
                if name.startswith(prefix):
                    head, _, tail = name[len(prefix):].partition("/")
                    names[head] = "dir" if tail else "file"
            if not names:
                return 404, NOT_FOUND, {}
            return 200, [{"name": n, "path": prefix + n, "type": t,
                          "size": len(files.get(prefix + n, "")) if t == "file" else 0}
                         for n, t in sorted(names.items())], {}
        if m := hit("PUT", r"/pulls/(\d+)/merge"):
            status, payload, extra = self._merge(repo, m.group(1), body)
            if status == 200:  # the base branch moves to the merged head
                pull = repo.pulls[int(m.group(1))]
                git.refs[f"heads/{pull['base']['ref']}"] = pull["head"]["sha"]
            return status, payload, extra
        return None

    # --- helpers --------------------------------------------------------------------------------
    def _ref_answer(self, git: GitStore, name: str):
        sha = git.refs.get(name)
        if sha is None:
            return 404, NOT_FOUND, {}
        return 200, {"ref": f"refs/{name}", "node_id": "REF_kw", "url": f"git/refs/{name}",
                     "object": {"sha": sha, "type": "commit", "url": f"git/commits/{sha}"}}, {}

    @staticmethod
    def _commit_answer(sha: str, commit: dict) -> dict:
        return {"sha": sha, "node_id": "C_kw", "message": commit["message"],
                "tree": {"sha": commit["tree"], "url": f"git/trees/{commit['tree']}"},
                "parents": [{"sha": p, "url": f"git/commits/{p}"} for p in commit["parents"]],
                "author": {"name": BOT_LOGIN, "email": "bot@example.test", "date": "2026-01-01T00:00:00Z"}}

    @staticmethod
    def _descends(git: GitStore, sha: str, ancestor: str) -> bool:
        seen, todo = set(), [sha]
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            if current in seen:
                continue
            seen.add(current)
            todo.extend(git.commits.get(current, {}).get("parents", []))
        return False

    @staticmethod
    def _follow_heads(repo: FakeRepo, branch: str, sha: str) -> None:
        for pull in repo.pulls.values():
            if pull["state"] == "open" and pull["head"]["ref"] == branch:
                repo.push_head(pull["number"], sha)

    def _open_pull(self, repo: FakeRepo, git: GitStore, body: dict):
        head, base = body.get("head") or "", body.get("base") or ""
        if not body.get("title") or f"heads/{head}" not in git.refs or f"heads/{base}" not in git.refs:
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "invalid"}],
                         "documentation_url": DOCS}, {}
        if any(p["state"] == "open" and p["head"]["ref"] == head for p in repo.pulls.values()):
            return 422, {"message": "Validation Failed",
                         "errors": [{"message": f"A pull request already exists for {head}."}],
                         "documentation_url": DOCS}, {}
        pull = repo.add_pull(title=body["title"], head_ref=head, head_sha=git.refs[f"heads/{head}"],
                             base_ref=base, author=BOT_LOGIN, body=body.get("body"),
                             draft=bool(body.get("draft")))
        return 201, pull, {}

    @staticmethod
    def _diff(git: GitStore, pull: dict) -> str:
        before = git.files_at(pull["base"]["ref"])
        after = git.files_at(pull["head"]["sha"])
        out = []
        for path in sorted(set(before) | set(after)):
            if before.get(path) == after.get(path):
                continue
            out.append(f"diff --git a/{path} b/{path}\n")
            out.extend(difflib.unified_diff((before.get(path) or "").splitlines(True),
                                            (after.get(path) or "").splitlines(True),
                                            f"a/{path}" if path in before else "/dev/null",
                                            f"b/{path}" if path in after else "/dev/null"))
        return "".join(out)


__all__ = ["FakeGit", "GitStore", "_Answer"]
