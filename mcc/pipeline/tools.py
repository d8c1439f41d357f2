"""The pipeline's agent tools (OpenAI ``tools`` format). Names are a contract: tests script them.

architect: create_tasks · coder: list_files, read_file, report_progress, submit_changes ·
tester: read_pull_request, report_test_result · reviewer: read_pull_request, submit_review
"""
from __future__ import annotations

import logging
from urllib.parse import quote

import marshmallow as ma
from flask import current_app
from marshmallow import validate
from sqlalchemy import select

from mcc.extensions import db
from mcc.github import records
from mcc.github.auth import client_for
from mcc.github.checks import live_checks, overall
from mcc.github.paths import UnsafePath, contents_url, protected_prefix, repo_path
from mcc.models.github import Issue, PullRequest
from mcc.models.task import PRIORITIES, Task
from mcc.services import tasks
from mcc.pipeline import stages
from mcc.runtime.tools import Tool

log = logging.getLogger(__name__)

MAX_FILE_CHARS = 60_000
MAX_DIFF_CHARS = 60_000


class _Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


def _text(max_length: int, **kwargs):
    return ma.fields.String(validate=validate.Length(min=1, max=max_length), **kwargs)


class PlannedTask(_Strict):
    title = _text(300, required=True)
    description = ma.fields.String(validate=validate.Length(max=20_000), load_default=None)
    priority = ma.fields.String(validate=validate.OneOf(PRIORITIES), load_default="medium")
    definition_of_done = ma.fields.String(validate=validate.Length(max=5_000), load_default=None)
    assignee_type = ma.fields.String(validate=validate.OneOf(["coder", "tester", "reviewer", "architect"]),
                                     load_default="coder")


class CreateTasksArgs(_Strict):
    tasks = ma.fields.List(ma.fields.Nested(PlannedTask), required=True, validate=validate.Length(min=1, max=30))


class PathArgs(_Strict):
    path = ma.fields.String(load_default="", validate=validate.Length(max=500))


class ProgressArgs(_Strict):
    progress = ma.fields.Integer(required=True, validate=validate.Range(min=0, max=100))
    message = _text(2_000, required=True)


class FileChange(_Strict):
    path = _text(500, required=True)
    content = ma.fields.String(required=True, validate=validate.Length(max=1_000_000))


class SubmitChangesArgs(_Strict):
    title = _text(256, required=True)
    body = ma.fields.String(load_default="", validate=validate.Length(max=60_000))
    files = ma.fields.List(ma.fields.Nested(FileChange), load_default=list, validate=validate.Length(max=100))
    delete = ma.fields.List(_text(500), load_default=list, validate=validate.Length(max=100))


class TestResultArgs(_Strict):
    passed = ma.fields.Boolean(required=True)
    summary = _text(20_000, required=True)


class ReviewArgs(_Strict):
    verdict = ma.fields.String(required=True, validate=validate.OneOf(["approve", "request_changes"]))
    summary = _text(20_000, required=True)


def _schema(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


STRING = {"type": "string"}


def _task(ctx) -> Task:
    task = db.session.get(Task, ctx.turn.task_id) if ctx.turn.task_id else None
    if task is None:
        raise ToolRefusal("this conversation serves no task")
    return task


class ToolRefusal(Exception):
    pass


def _refusing(run):
    def wrapper(args, ctx):
        try:
            return run(args, ctx)
        except (ToolRefusal, UnsafePath) as exc:
            return {"error": str(exc)}
        except tasks.IllegalTransition as exc:
            return {"error": exc.message, "details": exc.details}
    return wrapper


def _client(ctx):
    return client_for(ctx.project)


def _default_branch(client, repo: str) -> str:
    return (client.get(f"/repos/{repo}") or {}).get("default_branch") or "main"


# --- architect -----------------------------------------------------------------------------------

def _create_tasks(args, ctx):
    if ctx.conversation.issue_id is None:
        raise ToolRefusal("create_tasks works in an issue conversation")
    created = stages.create_planned_tasks(ctx.conversation, args["tasks"], ctx.agent)
    return {"created": [{"id": str(t.id), "title": t.title, "status": t.status,
                         "assigned_to": str(t.assigned_agent_id) if t.assigned_agent_id else None}
                        for t in created]}


# --- coder ---------------------------------------------------------------------------------------

def _list_files(args, ctx):
    repo = ctx.project.github_repo
    path = repo_path(args["path"], allow_root=True)
    url = contents_url(repo, path, allow_root=True)  # refused before any request
    client = _client(ctx)
    listing = client.get(url, params={"ref": _default_branch(client, repo)})
    if isinstance(listing, dict):
        listing = [listing]
    return {"path": path, "entries": [{"name": e.get("name"), "path": e.get("path"), "type": e.get("type"),
                                       "size": e.get("size")} for e in listing or []][:500]}


def _read_file(args, ctx):
    repo = ctx.project.github_repo
    path = repo_path(args["path"])
    url = contents_url(repo, path)  # refused before any request
    client = _client(ctx)
    text = client.request("GET", url,
                          params={"ref": _default_branch(client, repo)},
                          accept="application/vnd.github.raw+json").data
    if not isinstance(text, str):
        raise ToolRefusal(f"{path} is a directory; use list_files")
    return {"path": path, "content": text[:MAX_FILE_CHARS], "truncated": len(text) > MAX_FILE_CHARS}


def _report_progress(args, ctx):
    task = _task(ctx)
    try:
        tasks.set_progress(task, args["progress"], args["message"])
    except Exception as exc:
        raise ToolRefusal(str(getattr(exc, "message", exc))) from exc
    return {"task_id": str(task.id), "progress": task.progress}


def _pull_request_of(task: Task) -> PullRequest | None:
    return db.session.scalars(select(PullRequest).where(PullRequest.task_id == task.id)
                              .order_by(PullRequest.created_at.desc())).first()


def _refuse_protected(paths: list[str]) -> None:
    """Workflow files run with the repository's secrets on push: agents never write or delete them."""
    protected = current_app.config["MCC_PROTECTED_PATHS"]
    hits = sorted({p for p in paths if protected_prefix(p, protected)})
    if hits:
        raise ToolRefusal(f"these paths are protected and cannot be changed by an agent: {', '.join(hits)} "
                          f"(protected: {', '.join(protected)}); a person must change them")


def _submit_changes(args, ctx):
    task = _task(ctx)
    if task.status != "in_progress":
        raise ToolRefusal(f"the task is {task.status}; changes are submitted while in progress")
    if not args["files"] and not args["delete"]:
        raise ToolRefusal("nothing to commit: give files and/or delete")
    written = [repo_path(change["path"]) for change in args["files"]]
    deleted = [repo_path(path) for path in args["delete"]]
    _refuse_protected(written + deleted)
    client = _client(ctx)
    repo = ctx.project.github_repo
    default = _default_branch(client, repo)
    branch = task.branch or f"mcc/task-{task.id.hex[:8]}"
    existing = _pull_request_of(task)
    base_ref = branch if task.branch else default
    base_sha = client.get(f"/repos/{repo}/git/ref/heads/{quote(base_ref)}")["object"]["sha"]
    base_tree = client.get(f"/repos/{repo}/git/commits/{base_sha}")["tree"]["sha"]
    entries = []
    for path, change in zip(written, args["files"]):
        blob = client.post(f"/repos/{repo}/git/blobs", json={"content": change["content"], "encoding": "utf-8"})
        entries.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
    for path in deleted:
        entries.append({"path": path, "mode": "100644", "type": "blob", "sha": None})
    tree = client.post(f"/repos/{repo}/git/trees", json={"base_tree": base_tree, "tree": entries})
    commit = client.post(f"/repos/{repo}/git/commits",
                         json={"message": args["title"], "tree": tree["sha"], "parents": [base_sha]})
    if task.branch:
        client.request("PATCH", f"/repos/{repo}/git/refs/heads/{quote(branch)}",
                       json={"sha": commit["sha"], "force": False})
    else:
        client.post(f"/repos/{repo}/git/refs", json={"ref": f"refs/heads/{branch}", "sha": commit["sha"]})
        task.branch = branch

    issue = db.session.get(Issue, task.issue_id) if task.issue_id else None
    body = args["body"] + (f"\n\nRefs #{issue.number}" if issue else "") + f"\n\n(MCC task {task.id})"
    if existing is None or existing.state != "open":
        data = client.post(f"/repos/{repo}/pulls", json={"title": args["title"], "head": branch, "base": default,
                                                         "body": body})
    else:
        data = client.request("PATCH", f"/repos/{repo}/pulls/{existing.number}",
                              json={"title": args["title"], "body": body}).data
        data = {**data, "head": {**(data.get("head") or {}), "sha": commit["sha"], "ref": branch}}
    pr, _ = records.upsert_pull_request(task.project_id, data)
    pr.task_id, pr.issue_id = task.id, task.issue_id
    pr.head_sha = commit["sha"]
    stages.advance(task, "testing", actor=ctx.agent, reason=f"changes submitted in #{pr.number}: {args['title']}")
    return {"pull_request": {"number": pr.number, "html_url": pr.html_url}, "branch": branch,
            "commit": commit["sha"], "task_status": task.status}


# --- tester and reviewer ---------------------------------------------------------------------------

def _read_pull_request(args, ctx):
    task = _task(ctx)
    pr = _pull_request_of(task)
    if pr is None:
        raise ToolRefusal("the task has no pull request yet")
    client = _client(ctx)
    repo = ctx.project.github_repo
    diff = client.request("GET", f"/repos/{repo}/pulls/{pr.number}", accept="application/vnd.github.diff").data
    checks = live_checks(client, repo, pr.head_sha) if pr.head_sha else []
    return {"number": pr.number, "title": pr.title, "head_sha": pr.head_sha,
            "diff": (diff if isinstance(diff, str) else "")[:MAX_DIFF_CHARS],
            "checks_state": overall(checks), "checks": [c.describe() for c in checks]}


def _report_test_result(args, ctx):
    task = _task(ctx)
    if task.status != "testing":
        raise ToolRefusal(f"the task is {task.status}, not testing")
    if args["passed"]:
        stages.advance(task, "review", actor=ctx.agent, reason=f"tests passed: {args['summary']}")
    else:
        stages.advance(task, "in_progress", actor=ctx.agent, reason=f"tests failed: {args['summary']}")
    return {"task_status": task.status}


def _submit_review(args, ctx):
    task = _task(ctx)
    if task.status != "review":
        raise ToolRefusal(f"the task is {task.status}, not in review")
    if args["verdict"] == "request_changes":
        stages.advance(task, "in_progress", actor=ctx.agent, reason=f"changes requested: {args['summary']}")
        return {"task_status": task.status}
    pr = _pull_request_of(task)
    if pr is not None:
        _client(ctx).post(f"/repos/{ctx.project.github_repo}/issues/{pr.number}/comments",
                          json={"body": f"**Review by {ctx.agent.name} (MCC): approve**\n\n{args['summary']}"})
    stages.await_human(task, args["summary"])
    return {"task_status": task.status, "awaiting": "a person's approval of the merge"}


def _spec(name, description, properties, required, schema, run, types) -> Tool:
    return Tool(name=name, description=description, parameters=_schema(properties, required), schema=schema,
                run=_refusing(run), agent_types=types)


# The pipeline's tools, loaded into the runtime's registry by ``create_app``.
TOOLS = [
    _spec("create_tasks", "Create the tasks that implement this issue; each is assigned to the least-loaded agent "
          "of its assignee_type (default coder).",
          {"tasks": {"type": "array", "minItems": 1, "maxItems": 30, "items": _schema({
              "title": STRING, "description": STRING, "definition_of_done": STRING,
              "priority": {"type": "string", "enum": list(PRIORITIES)},
              "assignee_type": {"type": "string", "enum": ["coder", "tester", "reviewer", "architect"]}},
              ["title"])}}, ["tasks"], CreateTasksArgs, _create_tasks, ("architect",)),
    _spec("list_files", "List files and folders at a path of the repository's default branch ('' = root).",
          {"path": STRING}, [], PathArgs, _list_files, ("coder", "tester", "reviewer", "architect")),
    _spec("read_file", "Read a file of the repository's default branch.", {"path": STRING}, ["path"], PathArgs,
          _read_file, ("coder", "tester", "reviewer", "architect")),
    _spec("report_progress", "Report progress (0-100) on your task with a short message.",
          {"progress": {"type": "integer", "minimum": 0, "maximum": 100}, "message": STRING},
          ["progress", "message"], ProgressArgs, _report_progress, ("coder",)),
    _spec("submit_changes", "Commit files (full contents) and deletions in one commit on the task's branch, open or "
          "update its pull request, and hand the task to testing.",
          {"title": STRING, "body": STRING,
           "files": {"type": "array", "items": _schema({"path": STRING, "content": STRING}, ["path", "content"])},
           "delete": {"type": "array", "items": STRING}}, ["title"], SubmitChangesArgs, _submit_changes, ("coder",)),
    _spec("read_pull_request", "Read the task's pull request: its diff and the state of its checks.", {}, [],
          _Strict, _read_pull_request, ("tester", "reviewer")),
    _spec("report_test_result", "Report whether the task's pull request passes testing, with a summary.",
          {"passed": {"type": "boolean"}, "summary": STRING}, ["passed", "summary"], TestResultArgs,
          _report_test_result, ("tester",)),
    _spec("submit_review", "Review the task's pull request: approve (a person then approves the merge) or "
          "request_changes (back to the coder).",
          {"verdict": {"type": "string", "enum": ["approve", "request_changes"]}, "summary": STRING},
          ["verdict", "summary"], ReviewArgs, _submit_review, ("reviewer",)),
]
