"""/users: user administration (admin only)."""
from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import func, select

from mcc.errors import NotFound
from mcc.extensions import db
from mcc.models.auth import User
from mcc.schemas.auth import UserSchema
from mcc.schemas.common import page_of
from mcc.schemas.users import UserCreateSchema, UserPageSchema, UserQueryArgsSchema, UserUpdateSchema
from mcc.security import requires_role
from mcc.services import audit
from mcc.services import users as user_service
from mcc.services.auth import void_all_tokens

URL_PREFIX = "/users"
blp = Blueprint("users", __name__, description="User administration (admin role)")


def _user_or_404(user_id: uuid.UUID) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("User not found.")
    return user


@blp.route("")
class Users(MethodView):
    decorators = [requires_role("admin")]

    @blp.arguments(UserQueryArgsSchema, location="query")
    @blp.response(200, UserPageSchema)
    def get(self, args):
        """List users"""
        page, limit = args["page"], args["limit"]
        total = db.session.scalar(select(func.count()).select_from(User))
        items = db.session.scalars(
            select(User).order_by(User.username).offset((page - 1) * limit).limit(limit)).all()
        return page_of(items, total, page, limit)

    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    def post(self, body):
        """Create a user"""
        user = user_service.create_user(body["username"], body["password"], body["role"])
        db.session.commit()
        return user


@blp.route("/<uuid:user_id>")
class UserById(MethodView):
    decorators = [requires_role("admin")]

    @blp.response(200, UserSchema)
    def get(self, user_id):
        """Get a user"""
        return _user_or_404(user_id)

    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, body, user_id):
        """Change a user's role or disable/enable them

        A role change or a disable voids the user's existing tokens. The last active admin
        cannot be demoted or disabled (409).
        """
        user = _user_or_404(user_id)
        user_service.ensure_an_admin_remains(user, body.get("role"), body.get("is_active"))
        changed = audit.changes(user, body)
        if changed:
            audit.record("user.updated", "user", user.id, {"username": user.username, "changes": changed})
        for key, value in body.items():
            setattr(user, key, value)
        if changed:
            void_all_tokens(user)
        db.session.commit()
        return user
