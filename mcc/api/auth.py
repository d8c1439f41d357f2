"""/auth: login, 2FA, token refresh and logout, the current user."""
from __future__ import annotations

from flask import request
from flask.views import MethodView
from flask_jwt_extended import current_user, get_jwt
from flask_smorest import Blueprint

from mcc.extensions import db, limiter
from mcc.schemas.auth import (LoginSchema, LogoutSchema, RefreshSchema, TokenSchema, TwoFactorCodeSchema,
                              TwoFactorSetupRequestSchema, TwoFactorSetupSchema, TwoFactorVerifySchema, UserSchema)
from mcc.security import PUBLIC
from mcc.services import auth as auth_service

URL_PREFIX = "/auth"
blp = Blueprint("auth", __name__, description="Login, two-factor authentication and tokens")


def _login_limit() -> str:
    from flask import current_app
    return current_app.config["MCC_LOGIN_RATE_LIMIT"]


@blp.route("/login")
class Login(MethodView):
    decorators = [limiter.limit(_login_limit)]

    @blp.doc(security=PUBLIC)
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Log in with username and password

        Answers tokens, or `requires_2fa: true` with a `temp_token` for /auth/2fa/verify.
        Wrong credentials: 401 whether or not the user exists. Repeated failures for one
        username from one IP (MCC_LOGIN_LOCKOUT), or from one IP (MCC_LOGIN_IP_LOCKOUT), are
        answered 429 RATE_LIMITED with Retry-After until the window passes.
        """
        result = auth_service.login(body["username"], body["password"], request.remote_addr or "")
        db.session.commit()
        return result


@blp.route("/2fa/verify")
class TwoFactorVerify(MethodView):
    decorators = [limiter.limit(_login_limit)]

    @blp.doc(security=PUBLIC)
    @blp.arguments(TwoFactorVerifySchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Finish a 2FA login with the temp token and a TOTP code

        A temp token works once and only here; a code is accepted once.
        """
        result = auth_service.verify_two_factor(body["temp_token"], body["code"], request.remote_addr or "")
        db.session.commit()
        return result


@blp.route("/refresh")
class Refresh(MethodView):
    decorators = [limiter.limit(_login_limit)]

    @blp.doc(security=PUBLIC)
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Exchange a refresh token for a new access and refresh token

        The presented refresh token is revoked. Presenting a revoked one again revokes its whole
        family (every token descended from the same login), except a token rotated less than
        MCC_REFRESH_REUSE_GRACE_SECONDS (10) ago whose family is still open: it gets a new pair in
        that family (a tab reloaded, or an answer lost, while its refresh was in flight).
        """
        result = auth_service.refresh(body["refresh_token"])
        db.session.commit()
        return result


@blp.route("/logout")
class Logout(MethodView):
    @blp.arguments(LogoutSchema)
    @blp.response(204)
    def post(self, body):
        """Revoke the presented access token and, when given, the refresh token's session"""
        auth_service.logout(get_jwt(), body.get("refresh_token"))
        db.session.commit()


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, UserSchema)
    def get(self):
        """The authenticated user"""
        return current_user


@blp.route("/2fa/setup")
class TwoFactorSetup(MethodView):
    @blp.arguments(TwoFactorSetupRequestSchema)
    @blp.response(200, TwoFactorSetupSchema)
    def post(self, body):
        """Start enabling 2FA: a new TOTP secret and its otpauth:// URI (current password required)

        2FA is not required until /auth/2fa/enable confirms a code from the authenticator. A wrong
        `password` is 403 FORBIDDEN and counts towards MCC_LOGIN_LOCKOUT (then 429).
        """
        result = auth_service.begin_two_factor_setup(current_user, body["password"], request.remote_addr or "")
        db.session.commit()
        return result


@blp.route("/2fa/enable")
class TwoFactorEnable(MethodView):
    @blp.arguments(TwoFactorCodeSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Confirm 2FA with a code from the authenticator and the current password; later logins need a code

        Every session opened so far with the password alone ends (its tokens answer 401); the
        answer carries new tokens for the caller, as a login with the code would. A wrong `password`
        is 403 FORBIDDEN (counted like a failed login). A notification records the change.
        """
        tokens = auth_service.enable_two_factor(current_user, body["code"], body["password"],
                                                request.remote_addr or "")
        db.session.commit()
        return tokens
