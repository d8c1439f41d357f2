"""Calendar periods (day, ISO week starting Monday, month) in the configured timezone."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from mcc.services.clock import local_zone

GRANULARITY = {"daily": "day", "weekly": "week", "monthly": "month", "day": "day", "week": "week",
               "month": "month"}


@dataclass(frozen=True)
class Period:
    kind: str  # day | week | month
    start: date  # local calendar date of the first day
    end: date  # first local date after the period

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.start.isoformat()}"

    def bounds_utc(self) -> tuple[datetime, datetime]:
        zone = local_zone()
        return (datetime.combine(self.start, datetime.min.time(), zone).astimezone(timezone.utc),
                datetime.combine(self.end, datetime.min.time(), zone).astimezone(timezone.utc))


def local_date(moment: datetime | None = None) -> date:
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(local_zone()).date()


def period_of(kind: str, day: date) -> Period:
    kind = GRANULARITY[kind]
    if kind == "day":
        return Period(kind, day, day + timedelta(days=1))
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return Period(kind, start, start + timedelta(days=7))
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return Period(kind, start, following)


def current_period(kind: str, moment: datetime | None = None) -> Period:
    return period_of(kind, local_date(moment))


def periods_between(kind: str, first: date, last: date) -> list[Period]:
    """Every period touching first..last (inclusive), in order."""
    result, period = [], period_of(kind, first)
    while period.start <= last:
        result.append(period)
        period = period_of(kind, period.end)
    return result
