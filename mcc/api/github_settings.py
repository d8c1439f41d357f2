"""/projects/{project_id}/github: how MCC works with the project's repository."""
from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.schemas.github import GitHubSettingsSchema, GitHubSettingsUpdateSchema
from mcc.security import requires_role
from mcc.services import github_sync as service

URL_PREFIX = "/projects/<uuid:project_id>/github"
blp = Blueprint("github_settings", __name__, description="GitHub settings and sync state of a project")


@blp.route("")
class GitHubSettings(MethodView):
    @blp.response(200, GitHubSettingsSchema)
    def get(self, project_id):
        """Get the project's GitHub settings and last sync"""
        return service.settings_of(project_id)

    @requires_role("operator")
    @blp.arguments(GitHubSettingsUpdateSchema)
    @blp.response(200, GitHubSettingsSchema)
    def patch(self, body, project_id):
        """Update the merge method, merging without checks, or the project's webhook secret (operator)

        `webhook_secret` is write-only: answers say only `webhook_secret_set`.
        """
        service.update_settings(project_id, body)
        db.session.commit()
        return service.settings_of(project_id)
