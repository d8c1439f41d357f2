"""Calendar boundaries in the configured timezone (MCC_TIMEZONE, default UTC)."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import current_app


def local_zone() -> ZoneInfo:
    return ZoneInfo(current_app.config.get("MCC_TIMEZONE", "UTC"))


def start_of_today(now: datetime | None = None) -> datetime:
    """Midnight today in the configured timezone, as an aware UTC datetime."""
    local = (now or datetime.now(timezone.utc)).astimezone(local_zone())
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
