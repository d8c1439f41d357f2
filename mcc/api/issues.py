"""/projects/{project_id}/issues: the GitHub issues of a project's repository."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.schemas.common import page_of
from mcc.schemas.github import IssuePageSchema, IssueQueryArgsSchema
from mcc.services import issues as service

URL_PREFIX = "/projects/<uuid:project_id>/issues"
blp = Blueprint("issues", __name__, description="GitHub issues of a project (webhooks and sync keep them current)")


@blp.route("")
class Issues(MethodView):
    @blp.arguments(IssueQueryArgsSchema, location="query")
    @blp.response(200, IssuePageSchema)
    def get(self, args, project_id):
        """List the project's issues, newest first

        `state` open (default) | closed | all; `label` keeps issues carrying that label. Pull requests
        are not issues here; deleted and transferred issues are not listed. `tasks_count` counts the
        MCC tasks planned from each issue.
        """
        items, total = service.list_issues(project_id, args["state"], args.get("label"), args["page"],
                                           args["limit"])
        return page_of(items, total, args["page"], args["limit"])
