"""Users, their refresh-token families and revoked token ids."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, DateTime, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mcc.extensions import db
from mcc.models.types import created_at_column, uuid_pk

ROLES = ("admin", "operator", "viewer")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="role"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    # Stored lower-case: "Alice" and "alice" are one account.
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Sealed (mcc.secretbox): never the TOTP seed in plain text.
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    # Set by /auth/2fa/setup, promoted to totp_secret by /auth/2fa/enable.
    totp_pending_secret: Mapped[str | None] = mapped_column(String(255))
    # Highest TOTP time step accepted so far: a code is never accepted twice.
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Carried in every token as "gen"; bumping it voids every token issued so far (password
    # change, disable, role change, 2FA reset).
    token_generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = created_at_column()
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_secret is not None


class RefreshToken(db.Model):
    """One row per refresh token ever issued; rotation links them into a family."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    issued_at: Mapped[datetime] = created_at_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[str | None] = mapped_column(String(36))


class RevokedToken(db.Model):
    """Durable copy of the access-token blocklist (Redis holds the hot copy when configured)."""

    __tablename__ = "revoked_tokens"

    # "jti:<id>" for one token, "family:<id>" for every access token of a refresh family.
    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
