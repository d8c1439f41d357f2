"""A small fake of the GitHub REST API on loopback: the endpoints MCC calls, with GitHub's shapes.

A real HTTP server (MCC's client runs unpatched against it): token and App JWT authentication
(installation tokens are issued only for a JWT that verifies with the App's public key), ``Link``
pagination, ETags with 304 answers, rate-limit headers, and failures scripted per request
(``fail(...)``): statuses, bodies and headers such as ``retry-after`` or an exhausted limit.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

DOCS = "https://docs.github.com/rest"
BOT_LOGIN = "mcc-app[bot]"
_ids = itertools.count(900_000_001)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def user(login: str) -> dict:
    return {"login": login, "id": abs(hash(login)) % 10_000_000, "node_id": "MDQ6VXNlcjE=",
            "avatar_url": f"https://avatars.githubusercontent.com/{login}",
            "type": "Bot" if "[bot]" in login else "User",
            "site_admin": False, "url": f"https://api.github.com/users/{login}",
            "html_url": f"https://github.com/{login}"}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: Any
    at: float


@dataclass
class Failure:
    method: str
    pattern: re.Pattern
    status: int
    body: Any
    headers: dict
    times: int
    query: dict = field(default_factory=dict)

    def matches(self, method: str, path: str, query: dict) -> bool:
        return (self.method == method and bool(self.pattern.search(path))
                and all(query.get(k) == v for k, v in self.query.items()))


@dataclass
class FakeRepo:
    full_name: str
    default_branch: str = "main"
    id: int = field(default_factory=lambda: next(_ids))
    issues: dict = field(default_factory=dict)  # number -> issue (plain issues only)
    pulls: dict = field(default_factory=dict)  # number -> pull request
    statuses: dict = field(default_factory=dict)  # sha -> [status]
    check_runs: dict = field(default_factory=dict)  # sha -> [check run]
    reviews: dict = field(default_factory=dict)  # number -> [review]
    comments: dict = field(default_factory=dict)  # number -> [comment]
    files: dict = field(default_factory=dict)  # path -> text
    merges: list = field(default_factory=list)
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
    _numbers: Any = field(default_factory=lambda: itertools.count(1))

    def _tick(self) -> str:
        self.clock += timedelta(minutes=1)
        return _iso(self.clock)

    def _urls(self, kind: str, number: int) -> dict:
        api = f"https://api.github.com/repos/{self.full_name}"
        web = f"https://github.com/{self.full_name}"
        page = "pull" if kind == "pulls" else "issues"
        return {"url": f"{api}/{kind}/{number}", "html_url": f"{web}/{page}/{number}",
                "comments_url": f"{api}/issues/{number}/comments"}

    def add_issue(self, title: str | None = None, state: str = "open", labels=(), author: str = "octocat",
                  body: str | None = "Steps to reproduce: ...", assignees=()) -> dict:
        number = next(self._numbers)
        now = self._tick()
        issue = {"id": next(_ids), "node_id": "I_kwDO", "number": number, "title": title or f"Issue {number}",
                 "user": user(author), "labels": [{"id": next(_ids), "name": n, "color": "d73a4a", "default": False,
                                                   "description": None} for n in labels],
                 "state": state, "state_reason": None if state == "open" else "completed", "locked": False,
                 "assignee": user(assignees[0]) if assignees else None, "assignees": [user(a) for a in assignees],
                 "milestone": None, "comments": 0, "created_at": now, "updated_at": now,
                 "closed_at": now if state == "closed" else None, "author_association": "OWNER",
                 "body": body, "reactions": {"total_count": 0}, **self._urls("issues", number)}
        self.issues[number] = issue
        return issue

    def add_pull(self, title: str | None = None, head_ref: str | None = None, head_sha: str | None = None,
                 base_ref: str = "main", author: str = "octocat", body: str | None = "Implements the thing.",
                 state: str = "open", draft: bool = False) -> dict:
        number = next(self._numbers)
        now = self._tick()
        head_sha = head_sha or hashlib.sha1(f"{self.full_name}#{number}".encode()).hexdigest()
        repo = {"id": self.id, "name": self.full_name.split("/")[1], "full_name": self.full_name,
                "default_branch": self.default_branch}
        pull = {"id": next(_ids), "node_id": "PR_kwDO", "number": number, "state": state, "locked": False,
                "title": title or f"Pull request {number}", "user": user(author), "body": body,
                "labels": [], "milestone": None, "draft": draft, "created_at": now, "updated_at": now,
                "closed_at": now if state == "closed" else None, "merged_at": None, "merge_commit_sha": None,
                "assignee": None, "assignees": [], "requested_reviewers": [],
                "head": {"label": f"octo:{head_ref or f'feature-{number}'}", "ref": head_ref or f"feature-{number}",
                         "sha": head_sha, "user": user(author), "repo": repo},
                "base": {"label": f"octo:{base_ref}", "ref": base_ref,
                         "sha": hashlib.sha1(base_ref.encode()).hexdigest(), "user": user(author), "repo": repo},
                "author_association": "MEMBER", "auto_merge": None, "merged": False, "mergeable": True,
                "mergeable_state": "clean", "merged_by": None, "comments": 0, "review_comments": 0,
                "commits": 1, "additions": 10, "deletions": 2, "changed_files": 1,
                **self._urls("pulls", number)}
        self.pulls[number] = pull
        return pull

    def touch(self, item: dict, **changes) -> dict:
        item.update(changes)
        item["updated_at"] = self._tick()
        return item

    def push_head(self, number: int, sha: str) -> None:
        pull = self.pulls[number]
        pull["head"]["sha"] = sha
        self.touch(pull)

    def add_status(self, sha: str, context: str, state: str) -> dict:
        status = {"id": next(_ids), "state": state, "context": context, "description": f"{context}: {state}",
                  "target_url": f"https://ci.example.test/{context}", "created_at": self._tick(),
                  "updated_at": _iso(self.clock)}
        self.statuses.setdefault(sha, []).insert(0, status)  # newest first, as GitHub lists them
        return status

    def add_check_run(self, sha: str, name: str, status: str = "completed", conclusion: str | None = "success") -> dict:
        run = {"id": next(_ids), "name": name, "head_sha": sha, "status": status, "conclusion": conclusion,
               "html_url": f"https://github.com/{self.full_name}/runs/1", "details_url": "https://ci.example.test",
               "started_at": self._tick(), "completed_at": _iso(self.clock) if status == "completed" else None,
               "app": {"slug": "ci"}, "pull_requests": []}
        self.check_runs.setdefault(sha, []).append(run)
        return run

    def issue_view_of_pull(self, pull: dict) -> dict:
        """How the issues API lists a pull request: an issue with a ``pull_request`` key."""
        return {"id": pull["id"] + 1, "number": pull["number"], "title": pull["title"], "user": pull["user"],
                "labels": pull["labels"], "state": "closed" if pull["state"] != "open" else "open",
                "assignees": [], "comments": pull["comments"], "created_at": pull["created_at"],
                "updated_at": pull["updated_at"], "closed_at": pull["closed_at"], "body": pull["body"],
                "html_url": pull["html_url"], "url": pull["url"].replace("/pulls/", "/issues/"),
                "pull_request": {"url": pull["url"], "html_url": pull["html_url"],
                                 "merged_at": pull["merged_at"]}}


class FakeGitHub:
    def __init__(self, *, app_id: str = "31337", public_key: str | None = None, token: str | None = None):
        self.app_id = app_id
        self.public_key = public_key
        self.tokens: set[str] = set()
        self.token = token or f"ghp_{secrets.token_hex(16)}"
        self.tokens.add(self.token)
        self.installations: dict[str, list[str]] = {}  # installation id -> repos (lower)
        self.exchanges: list[dict] = []  # verified JWT claims of each token exchange
        self.token_lifetime = 3600
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.rate_remaining = 5000
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                fake._dispatch(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    # --- test controls ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, full_name: str, default_branch: str = "main", installation_id: str | None = None) -> FakeRepo:
        repo = FakeRepo(full_name, default_branch)
        self.repos[full_name.lower()] = repo
        if installation_id:
            self.installations.setdefault(str(installation_id), []).append(full_name.lower())
        return repo

    def fail(self, method: str, path_regex: str, status: int, body: Any = None, headers: dict | None = None,
             times: int = 1, query: dict | None = None) -> None:
        """The next ``times`` matching requests (path, and ``query`` items when given) get this answer.
        Header values may be callables, evaluated when the answer is sent."""
        with self.lock:
            self.failures.append(Failure(method, re.compile(path_regex), status,
                                         body if body is not None else {"message": "Server Error"},
                                         headers or {}, times, query or {}))

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path_regex is None or re.search(path_regex, r.path))]

    # --- plumbing ------------------------------------------------------------------------------
    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        method = handler.command
        with self.lock:
            self.requests.append(Recorded(method, parts.path, query, dict(handler.headers), body, time.time()))
            failure = next((f for f in self.failures if f.matches(method, parts.path, query)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
        if failure is not None:
            headers = {k: (v() if callable(v) else v) for k, v in failure.headers.items()}
            return self._send(handler, failure.status, failure.body, headers)
        try:
            with self.lock:
                status, payload, headers = self._route(method, parts.path, query, body, handler.headers)
        except _Answer as answer:
            status, payload, headers = answer.status, answer.body, answer.headers
        self._send(handler, status, payload, headers)

    def _send(self, handler, status: int, payload: Any, headers: dict | None = None) -> None:
        headers = dict(headers or {})
        raw_file = headers.get("Content-Type", "").startswith("application/vnd.github.raw")
        if isinstance(payload, (bytes, str)) and raw_file:
            raw = payload.encode() if isinstance(payload, str) else payload
        else:
            raw = b"" if status == 304 or payload is None else json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        with self.lock:
            if status != 304:
                self.rate_remaining = max(0, self.rate_remaining - 1)
            rate = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(self.rate_remaining),
                    "X-RateLimit-Reset": str(int(time.time()) + 3600),
                    "X-RateLimit-Used": str(5000 - self.rate_remaining),
                    "X-RateLimit-Resource": "core"}
        for name, value in rate.items():
            headers.setdefault(name, value)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        if raw:
            handler.wfile.write(raw)

    # --- authentication ------------------------------------------------------------------------
    def _bearer(self, headers) -> str | None:
        value = headers.get("Authorization") or ""
        for prefix in ("Bearer ", "token "):
            if value.startswith(prefix):
                return value[len(prefix):]
        return None

    def _require_token(self, headers) -> None:
        if self._bearer(headers) not in self.tokens:
            raise _Answer(401, {"message": "Bad credentials", "documentation_url": DOCS})

    def _require_app_jwt(self, headers) -> dict:
        token = self._bearer(headers)
        try:
            claims = jwt.decode(token or "", self.public_key, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]}, leeway=0)
        except jwt.PyJWTError as exc:
            raise _Answer(401, {"message": f"A JSON web token could not be decoded ({exc})",
                                "documentation_url": DOCS})
        if str(claims["iss"]) != self.app_id or claims["exp"] - claims["iat"] > 660:
            raise _Answer(401, {"message": "'Issuer' claim ('iss') must be the app id; expiry at most 10 minutes",
                                "documentation_url": DOCS})
        return claims

    # --- routes --------------------------------------------------------------------------------
    def _repo(self, owner: str, name: str) -> FakeRepo:
        repo = self.repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS})
        return repo

    def _route(self, method: str, path: str, query: dict, body: Any, headers) -> tuple[int, Any, dict]:
        m = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if m and method == "POST":
            claims = self._require_app_jwt(headers)
            if m.group(1) not in self.installations:
                return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
            token = f"ghs_{secrets.token_hex(16)}"
            self.tokens.add(token)
            self.exchanges.append(claims)
            expires = datetime.now(timezone.utc) + timedelta(seconds=self.token_lifetime)
            return 201, {"token": token, "expires_at": _iso(expires), "permissions": {"issues": "write"},
                         "repository_selection": "selected"}, {}
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)/installation", path)
        if m and method == "GET":
            self._require_app_jwt(headers)
            full = f"{m.group(1)}/{m.group(2)}".lower()
            for installation, repos in self.installations.items():
                if full in repos:
                    return 200, {"id": int(installation), "app_id": int(self.app_id)}, {}
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if not m:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        self._require_token(headers)
        repo, rest = self._repo(m.group(1), m.group(2)), m.group(3) or ""
        routes: list[tuple[str, str, Callable]] = [
            ("GET", r"/issues", lambda: self._list(repo, rest, query, headers, self._issue_listing(repo, query))),
            ("GET", r"/pulls", lambda: self._list(repo, rest, query, headers, self._pull_listing(repo, query))),
            ("GET", r"/pulls/(\d+)", lambda n: (200, self._pull(repo, n), {})),
            ("PUT", r"/pulls/(\d+)/merge", lambda n: self._merge(repo, n, body or {})),
            ("GET", r"/pulls/(\d+)/reviews", lambda n: self._list(repo, rest, query, headers,
                                                                  repo.reviews.get(self._pull(repo, n)["number"], []))),
            ("POST", r"/pulls/(\d+)/reviews", lambda n: self._review(repo, n, body or {})),
            ("POST", r"/issues/(\d+)/comments", lambda n: self._comment(repo, n, body or {})),
            ("PATCH", r"/issues/(\d+)", lambda n: self._edit_issue(repo, n, body or {})),
            ("GET", r"/commits/([0-9a-f]+)/status", lambda sha: self._combined(repo, sha)),
            ("GET", r"/commits/([0-9a-f]+)/check-runs", lambda sha: self._check_runs(repo, rest, query, sha)),
            ("GET", r"/contents/(.+)", lambda p: self._contents(repo, p, headers)),
        ]
        for verb, pattern, action in routes:
            hit = re.fullmatch(pattern, rest)
            if verb == method and hit:
                return action(*hit.groups())
        return 404, {"message": "Not Found", "documentation_url": DOCS}, {}

    def _issue_listing(self, repo: FakeRepo, query: dict) -> list[dict]:
        items = list(repo.issues.values()) + [repo.issue_view_of_pull(p) for p in repo.pulls.values()]
        return self._filter_sort(items, query)

    def _pull_listing(self, repo: FakeRepo, query: dict) -> list[dict]:
        return self._filter_sort(list(repo.pulls.values()), query)

    @staticmethod
    def _filter_sort(items: list[dict], query: dict) -> list[dict]:
        state = query.get("state", "open")
        if state != "all":
            items = [i for i in items if i["state"] == state]
        key = "updated_at" if query.get("sort") == "updated" else "created_at"
        return sorted(items, key=lambda i: (i[key], i["number"]), reverse=query.get("direction", "desc") == "desc")

    def _list(self, repo: FakeRepo, rest: str, query: dict, headers, items: list, wrap: str | None = None):
        per_page = min(100, int(query.get("per_page", 30)))
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, -(-len(items) // per_page))
        payload = {"total_count": len(items), wrap: chunk} if wrap else chunk
        etag = 'W/"' + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32] + '"'
        if headers.get("If-None-Match") == etag:
            return 304, None, {"ETag": etag}
        links = []

        def url(n):
            return f"{self.base_url}/repos/{repo.full_name}{rest}?" + urlencode({**query, "page": n})
        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{url(page - 1)}>; rel="prev"', f'<{url(1)}>; rel="first"']
        out = {"ETag": etag}
        if links:
            out["Link"] = ", ".join(links)
        return 200, payload, out

    def _pull(self, repo: FakeRepo, number) -> dict:
        pull = repo.pulls.get(int(number))
        if pull is None:
            raise _Answer(404, {"message": "Not Found", "documentation_url": DOCS})
        return pull

    def _merge(self, repo: FakeRepo, number, body: dict):
        pull = self._pull(repo, number)
        if pull["state"] != "open" or pull.get("draft"):
            return 405, {"message": "Pull Request is not mergeable", "documentation_url": DOCS}, {}
        if body.get("sha") and body["sha"] != pull["head"]["sha"]:
            return 409, {"message": "Head branch was modified. Review and try the merge again.",
                         "documentation_url": DOCS}, {}
        if body.get("merge_method", "merge") not in ("merge", "squash", "rebase"):
            return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
        sha = hashlib.sha1(f"merge-{pull['number']}-{time.time()}".encode()).hexdigest()
        repo.touch(pull, state="closed", merged=True, merged_at=None, merge_commit_sha=sha)
        pull["merged_at"] = pull["closed_at"] = pull["updated_at"]
        repo.merges.append({"number": pull["number"], **body})
        return 200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"}, {}

    def _review(self, repo: FakeRepo, number, body: dict):
        pull = self._pull(repo, number)
        event = body.get("event")
        if event in ("REQUEST_CHANGES", "APPROVE") and pull["user"]["login"] == BOT_LOGIN:
            verb = "request changes on" if event == "REQUEST_CHANGES" else "approve"
            return 422, {"message": "Unprocessable Entity", "errors": [f"Can not {verb} your own pull request"],
                         "documentation_url": DOCS, "status": "422"}, {}
        state = {"REQUEST_CHANGES": "CHANGES_REQUESTED", "APPROVE": "APPROVED", "COMMENT": "COMMENTED"}.get(event)
        if state is None:
            return 422, {"message": "Validation Failed", "documentation_url": DOCS}, {}
        review = {"id": next(_ids), "node_id": "PRR_kw", "user": user(BOT_LOGIN), "body": body.get("body"),
                  "state": state, "commit_id": body.get("commit_id") or pull["head"]["sha"],
                  "submitted_at": repo._tick(), "html_url": f"{pull['html_url']}#pullrequestreview-1",
                  "pull_request_url": pull["url"], "author_association": "NONE"}
        repo.reviews.setdefault(pull["number"], []).append(review)
        pull["updated_at"] = review["submitted_at"]
        return 200, review, {}

    def _comment(self, repo: FakeRepo, number, body: dict):
        number = int(number)
        target = repo.pulls.get(number) or repo.issues.get(number)
        if target is None:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        comment = {"id": next(_ids), "node_id": "IC_kw", "user": user(BOT_LOGIN), "body": body.get("body"),
                   "created_at": repo._tick(), "html_url": f"{target['html_url']}#issuecomment-1",
                   "author_association": "NONE"}
        comment["updated_at"] = comment["created_at"]
        repo.comments.setdefault(number, []).append(comment)
        repo.touch(target, comments=target["comments"] + 1)
        return 201, comment, {}

    def _edit_issue(self, repo: FakeRepo, number, body: dict):
        issue = repo.issues.get(int(number))
        if issue is None:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        changes = {k: v for k, v in body.items() if k in ("title", "body", "state", "state_reason")}
        if changes.get("state") == "closed":
            changes["closed_at"] = _iso(repo.clock)
        return 200, repo.touch(issue, **changes), {}

    def _combined(self, repo: FakeRepo, sha: str):
        latest: dict[str, dict] = {}
        for status in repo.statuses.get(sha, []):  # newest first
            latest.setdefault(status["context"], status)
        states = {s["state"] for s in latest.values()}
        state = ("failure" if states & {"failure", "error"} else "pending" if "pending" in states or not states
                 else "success")
        return 200, {"state": state, "sha": sha, "total_count": len(latest), "statuses": list(latest.values()),
                     "repository": {"full_name": repo.full_name}}, {}

    def _check_runs(self, repo: FakeRepo, rest: str, query: dict, sha: str):
        latest: dict[str, dict] = {}
        for run in repo.check_runs.get(sha, []):  # filter=latest: the newest run of each name
            latest[run["name"]] = run
        return self._list(repo, rest, query, {}, list(latest.values()), wrap="check_runs")

    def _contents(self, repo: FakeRepo, path: str, headers):
        text = repo.files.get(path)
        if text is None:
            return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
        if "raw" in (headers.get("Accept") or ""):
            return 200, text, {"Content-Type": "application/vnd.github.raw; charset=utf-8"}
        return 200, {"type": "file", "encoding": "base64", "path": path, "name": path.rsplit("/", 1)[-1],
                     "content": base64.b64encode(text.encode()).decode()}, {}


class _Answer(Exception):
    def __init__(self, status: int, body: Any, headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}
