"""A user's time zone and language, checked against the standards that name
them, so that clients can hand them to zoneinfo, Intl or Accept-Language
as they are."""

from __future__ import annotations

import zoneinfo
from functools import cache

import langcodes


def language_tag(value: str) -> str:
    """The tag as BCP 47 writes it (langcodes: its registry, its canonical
    form: PT-br is pt-BR, fra is fr), or ValueError for a tag the registry
    does not know. One form is stored, so that equal tags compare equal."""
    if not langcodes.tag_is_valid(value):
        raise ValueError("must be a BCP 47 language tag, e.g. fr, pt-BR or zh-Hant")
    return str(langcodes.standardize_tag(value))


@cache
def time_zones() -> frozenset[str]:
    """The IANA zone names this machine's tz database knows (read once: it
    walks the database's files)."""
    return frozenset(zoneinfo.available_timezones())


def time_zone(value: str) -> str:
    """The IANA zone name as given (Europe/Paris, UTC), or ValueError:
    names are case-sensitive, and an offset (+02:00) is no zone, as it
    ignores daylight saving time."""
    if value not in time_zones():
        raise ValueError("must be an IANA time zone name, e.g. Europe/Paris")
    return value
