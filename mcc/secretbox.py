"""Secrets MCC must read back (TOTP seeds) are stored sealed, not in plain text.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key derived from MCC_SECRET_KEY
by HKDF, so a copy of the database alone does not give away anyone's second factor. A value
without the ``v1:`` prefix is a plain-text secret stored before sealing existed: it is read as is
and sealed again at its next use.
"""
from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

PREFIX = "v1:"


class SealBroken(Exception):
    """The value was sealed with another MCC_SECRET_KEY (or altered)."""


def _fernet() -> Fernet:
    secret = current_app.config["SECRET_KEY"]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mcc secretbox v1").derive(
        secret.encode() if isinstance(secret, str) else secret)
    return Fernet(base64.urlsafe_b64encode(key))


def seal(plaintext: str) -> str:
    return PREFIX + _fernet().encrypt(plaintext.encode()).decode()


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def unseal(stored: str) -> str:
    if not is_sealed(stored):
        return stored
    try:
        return _fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken as exc:
        raise SealBroken("sealed with another MCC_SECRET_KEY, or altered") from exc
