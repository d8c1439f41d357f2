"""Issues mirrored from the project's repository: the list MCC shows and plans tasks from."""
from __future__ import annotations

import json
import uuid

from sqlalchemy import Text, cast, func, select

from mcc.extensions import db
from mcc.models.github import Issue
from mcc.models.project import Project
from mcc.models.task import Task
from mcc.services.lookup import get_scoped


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_issues(project_id: uuid.UUID, state: str, label: str | None, page: int, limit: int) -> tuple[list, int]:
    """Newest first; deleted and transferred issues are not listed. Each issue gets ``tasks_count``."""
    get_scoped(Project, project_id, label="Project")
    query = select(Issue).where(Issue.project_id == project_id, Issue.deleted_at.is_(None))
    if state != "all":
        query = query.where(Issue.state == state)
    if label:
        # labels is a JSON list of names; match one whole element, case-insensitively (as GitHub does).
        query = query.where(cast(Issue.labels, Text).ilike(f"%{_like_escape(json.dumps(label))}%", escape="\\"))
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    items = list(db.session.scalars(query.order_by(Issue.number.desc()).offset((page - 1) * limit).limit(limit)))
    counts = dict(db.session.execute(
        select(Task.issue_id, func.count()).where(Task.issue_id.in_([i.id for i in items])).group_by(Task.issue_id)
    ).all()) if items else {}
    for issue in items:
        issue.tasks_count = counts.get(issue.id, 0)
    return items, total
