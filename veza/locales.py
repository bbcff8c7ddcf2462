"""A user's time zone and language, checked against the standards that name
them, so that clients can hand them to zoneinfo, Intl or Accept-Language
as they are."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

# ISO 639-1: every two-letter language code (the alpha_2 codes of Debian's
# iso-codes, /usr/share/iso-codes/json/iso_639-2.json). Written out rather
# than read from there: the image does not install iso-codes.
ISO_639_1_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce
    ch co cr cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr
    fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is
    it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln
    lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv
    ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk
    sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw
    ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""
ISO_639_1 = frozenset(ISO_639_1_CODES.split())

# The short BCP 47 tags people choose a language by: a language, then
# optionally a script (zh-Hant) and a region (pt-BR, es-419).
LANGUAGE_TAG = re.compile(r"([a-z]{2})(?:-([a-z]{4}))?(?:-([a-z]{2}|[0-9]{3}))?", re.IGNORECASE)


def language_tag(value: str) -> str:
    """The tag in BCP 47's canonical case (pt-BR, zh-Hant-TW), or ValueError
    unless it is an ISO 639-1 language, optionally with a script and a
    region. BCP 47 tags are case-insensitive: one case is stored, so that
    equal tags compare equal."""
    match = LANGUAGE_TAG.fullmatch(value)
    if match is None or match[1].lower() not in ISO_639_1:
        raise ValueError("must be an ISO 639-1 language code, e.g. fr, pt-BR or zh-Hant")
    language, script, region = match.groups()
    parts = [language.lower(), script and script.title(), region and region.upper()]
    return "-".join(part for part in parts if part)


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
