"""Who may call what: the authentication gate in front of routing, role checks, JWT callbacks."""
from __future__ import annotations

import functools
import uuid

from flask import request
from flask_jwt_extended import current_user, get_jwt, verify_jwt_in_request

from mcc.errors import Forbidden, error_response
from mcc.extensions import db, jwt
from mcc.models.auth import User
from mcc.services import tokens
from mcc.services.auth import STEP_UP_HEADER, TOTP_PURPOSE, step_up, token_is_current

API_PREFIX = "/api/v1"
# Reachable without an access token. Everything else under /api/v1 answers 401 to anonymous
# clients before routing, even for paths that do not exist.
PUBLIC_PATHS = frozenset({
    f"{API_PREFIX}/auth/login",
    f"{API_PREFIX}/auth/2fa/verify",
    f"{API_PREFIX}/auth/refresh",
    f"{API_PREFIX}/webhooks/github",
    f"{API_PREFIX}/openapi.json",
})
PUBLIC_PREFIXES = (f"{API_PREFIX}/docs", f"{API_PREFIX}/webhooks/github/")  # + per-project webhook URLs
# The OpenAPI ``security`` of a public route: no bearer token (``@blp.doc(security=PUBLIC)``).
PUBLIC: list = []

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


def is_public(path: str) -> bool:
    path = path.rstrip("/") or "/"
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def authenticate_api_request():
    """before_request: a valid access token is required for every non-public API path.

    flask-jwt-extended lets OPTIONS through unchecked (for CORS preflights, which this API does not
    serve): an anonymous OPTIONS would answer 200 with an ``Allow`` header, a route map. Check it here."""
    if request.path.startswith(API_PREFIX) and not is_public(request.path):
        if request.method == "OPTIONS":
            return None if _options_caller_is_authenticated() else _unauthorized(
                "Missing or invalid Authorization header: send 'Authorization: Bearer <access token>'.")
        verify_jwt_in_request()
    return None


def _options_caller_is_authenticated() -> bool:
    from flask_jwt_extended import decode_token
    from jwt.exceptions import PyJWTError

    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or len(header) > 4096:
        return False
    try:
        claims = decode_token(header[len("Bearer "):])
    except (PyJWTError, ValueError, KeyError, TypeError):
        return False
    return (claims.get("type") == "access" and usable_access_claims(claims) and not revoked(claims)
            and user_of(claims) is not None)


def user_of(claims: dict) -> User | None:
    """The active user a token's claims name, if the token is still current for them."""
    try:
        user = db.session.get(User, uuid.UUID(claims["sub"]))
    except (ValueError, KeyError, TypeError):
        return None
    if user is None or not user.is_active or not token_is_current(user, claims):
        return None
    return user


def revoked(claims: dict) -> bool:
    keys = [f"jti:{claims['jti']}"]
    if claims.get("fam"):
        keys.append(f"family:{claims['fam']}")
    return tokens.is_revoked(*keys)


def usable_access_claims(claims: dict) -> bool:
    # A 2FA temp token is an access-type JWT; it is good for /auth/2fa/verify only.
    return claims.get("purpose") != TOTP_PURPOSE


def _verify_once() -> None:
    """Verify the request's access token unless this request already did (``authenticate_api_request``
    does for every API path): each verification costs a revocation lookup and a user load."""
    try:
        if get_jwt():
            return
    except RuntimeError:  # not verified yet
        pass
    verify_jwt_in_request()


def requires_role(minimum: str):
    """Allow users whose role is at least ``minimum`` (viewer < operator < admin)."""
    needed = ROLE_RANK[minimum]

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            _verify_once()
            if ROLE_RANK.get(current_user.role, -1) < needed:
                raise Forbidden(f"This action needs the {minimum} role; you are {current_user.role}.")
            return view(*args, **kwargs)
        return wrapper
    return decorator


STEP_UP_PARAMETER = {"in": "header", "name": "X-MCC-TOTP", "required": False, "schema": {"type": "string"},
                     "description": "A fresh TOTP code (step-up). Required from users with 2FA on, and from "
                                    "everyone for the acts listed in MCC_REQUIRE_2FA_FOR; a code already used "
                                    "(the login's too) is refused: 403 TWO_FACTOR_REQUIRED."}


def check_step_up(act: str) -> None:
    """For a view: the current user must step up for ``act`` (see ``auth.step_up``)."""
    step_up(current_user, act, request.headers.get(STEP_UP_HEADER))


def requires_step_up(act: str):
    """After the role check: the act needs a fresh TOTP code (``check_step_up``)."""
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            _verify_once()
            check_step_up(act)
            return view(*args, **kwargs)
        return wrapper
    return decorator


def _unauthorized(message: str):
    return error_response(401, "UNAUTHORIZED", message)


def init_app(app) -> None:
    jwt.user_lookup_loader(lambda _header, claims: user_of(claims))
    jwt.token_in_blocklist_loader(lambda _header, claims: revoked(claims))
    jwt.token_verification_loader(lambda _header, claims: usable_access_claims(claims))

    jwt.unauthorized_loader(lambda reason: _unauthorized("Missing or malformed Authorization header: "
                                                         "send 'Authorization: Bearer <access token>'."))
    jwt.invalid_token_loader(lambda reason: _unauthorized("The access token is invalid."))
    jwt.expired_token_loader(lambda _h, _c: _unauthorized("The access token has expired; refresh it."))
    jwt.revoked_token_loader(lambda _h, _c: _unauthorized("The access token has been revoked."))
    jwt.token_verification_failed_loader(lambda _h, _c: _unauthorized("This token cannot be used here."))
    jwt.user_lookup_error_loader(lambda _h, _c: _unauthorized("The account is disabled or the token is void."))
    jwt.needs_fresh_token_loader(lambda _h, _c: _unauthorized("A fresh login is required."))
