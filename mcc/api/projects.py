"""/projects: projects bound to GitHub repositories."""
from __future__ import annotations

from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import Blueprint

from mcc.extensions import db
from mcc.schemas.common import ErrorSchema, page_of
from mcc.schemas.github import SyncQueuedSchema
from mcc.schemas.projects import (ProjectCreateSchema, ProjectPageSchema, ProjectQueryArgsSchema, ProjectSchema,
                                  ProjectUpdateSchema)
from mcc.security import requires_role
from mcc.services import github_sync
from mcc.services import projects as service

URL_PREFIX = "/projects"
blp = Blueprint("projects", __name__, description="Projects, each bound to one GitHub repository")


def with_stats(projects: list) -> list:
    stats = service.project_stats([p.id for p in projects])
    for project in projects:
        project.stats = stats[project.id]
    return projects


@blp.route("")
class Projects(MethodView):
    @blp.arguments(ProjectQueryArgsSchema, location="query")
    @blp.response(200, ProjectPageSchema)
    def get(self, args):
        """List projects, newest first"""
        items, total = service.list_projects(args["page"], args["limit"], args.get("is_active"))
        return page_of(with_stats(items), total, args["page"], args["limit"])

    @requires_role("operator")
    @blp.arguments(ProjectCreateSchema)
    @blp.response(201, ProjectSchema)
    def post(self, body):
        """Create a project (operator)

        `github_repo` must look like `owner/repo`, be allowed by `MCC_GITHUB_ALLOWED_REPOS` and not be
        bound to another project (case-insensitive); otherwise 422 VALIDATION_ERROR naming the field.
        `github_app_id` and `github_installation_id` are set by an admin only (403 otherwise).
        """
        project = service.create_project(body, current_user)
        db.session.commit()
        github_sync.sync_new_project(project)  # imports the repository's issues and PRs when GitHub is configured
        return with_stats([project])[0]


@blp.route("/<uuid:project_id>")
class ProjectById(MethodView):
    @blp.response(200, ProjectSchema)
    def get(self, project_id):
        """Get a project with its stats"""
        return with_stats([service.get_project(project_id)])[0]

    @requires_role("operator")
    @blp.arguments(ProjectUpdateSchema)
    @blp.response(200, ProjectSchema)
    def patch(self, body, project_id):
        """Update a project (operator; `github_app_id` and `github_installation_id`: admin)"""
        project = service.update_project(project_id, body, current_user)
        db.session.commit()
        return with_stats([project])[0]

    @requires_role("operator")
    @blp.response(204)
    def delete(self, project_id):
        """Delete a project and everything that belongs to it (operator), in one transaction"""
        service.delete_project(project_id)
        db.session.commit()


@blp.route("/<uuid:project_id>/sync")
class ProjectSync(MethodView):
    @requires_role("operator")
    @blp.response(202, SyncQueuedSchema)
    @blp.alt_response(409, schema=ErrorSchema,
                      description="GITHUB_NOT_CONFIGURED: no GitHub token or App for this project")
    def post(self, project_id):
        """Start a full GitHub sync of the project's issues and pull requests (operator)

        Runs on a worker; at most one sync waits per project (`already_queued`).
        """
        return github_sync.start_sync(project_id)
