from __future__ import annotations

import marshmallow as ma
from marshmallow import validate

from mcc.schemas.common import StrictSchema, Text, UtcDateTime

TOTP_CODE = validate.Regexp(r"^[0-9]{6}\Z", error="Must be a 6-digit code.")


class LoginSchema(StrictSchema):
    username = Text(required=True, min_length=1, max_length=64)
    password = Text(required=True, min_length=1, max_length=1024)


class TwoFactorVerifySchema(StrictSchema):
    temp_token = Text(required=True, min_length=1, max_length=4096)
    code = ma.fields.String(required=True, validate=TOTP_CODE)


class TwoFactorCodeSchema(StrictSchema):
    code = ma.fields.String(required=True, validate=TOTP_CODE)
    password = Text(required=True, min_length=1, max_length=1024,
                    metadata={"description": "the caller's current password: a stolen access token alone "
                                             "cannot change 2FA"})


class TwoFactorSetupRequestSchema(StrictSchema):
    password = Text(required=True, min_length=1, max_length=1024, metadata={"description": "the current password"})


class RefreshSchema(StrictSchema):
    refresh_token = Text(required=True, min_length=1, max_length=4096)


class LogoutSchema(StrictSchema):
    refresh_token = Text(load_default=None, allow_none=True, max_length=4096)


class TokenSchema(ma.Schema):
    access_token = ma.fields.String(allow_none=True, required=True)
    refresh_token = ma.fields.String(allow_none=True, required=True)
    token_type = ma.fields.String(required=True, metadata={"example": "bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "seconds until the token expires"})
    requires_2fa = ma.fields.Boolean(required=True)
    temp_token = ma.fields.String(
        metadata={"description": "present when requires_2fa is true: send it to /auth/2fa/verify"})


class TwoFactorSetupSchema(ma.Schema):
    secret = ma.fields.String(required=True)
    provisioning_uri = ma.fields.String(required=True, metadata={"example": "otpauth://totp/MCC:alice?..."})


class UserSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    username = ma.fields.String(required=True)
    role = ma.fields.String(required=True, validate=validate.OneOf(["admin", "operator", "viewer"]))
    is_active = ma.fields.Boolean(required=True)
    two_factor_enabled = ma.fields.Boolean(required=True)
    created_at = UtcDateTime(required=True)
    last_login_at = UtcDateTime(required=True, allow_none=True)
