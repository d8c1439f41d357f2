from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.models.auth import ROLES
from mcc.schemas.auth import UserSchema
from mcc.schemas.common import PageQuerySchema, PageSchema, StrictSchema, Text
from mcc.services.users import MIN_PASSWORD_LENGTH, USERNAME


class UserCreateSchema(StrictSchema):
    username = Text(required=True, min_length=1, max_length=64, validate=[validate.Regexp(USERNAME)])
    password = Text(required=True, min_length=MIN_PASSWORD_LENGTH, max_length=1024)
    role = ma.fields.String(required=True, validate=validate.OneOf(ROLES))


class UserUpdateSchema(StrictSchema):
    role = ma.fields.String(validate=validate.OneOf(ROLES))
    is_active = ma.fields.Boolean()


class UserQueryArgsSchema(PageQuerySchema):
    pass


class UserPageSchema(PageSchema):
    items = ma.fields.List(ma.fields.Nested(UserSchema), required=True)
