"""Full-text search of messages, each in its own language.

Enrichment (veza/messages/enrichment.py) stems a message with the text
search configuration of the language it detected (`search_config`, 'simple'
when unknown or without one in PostgreSQL) into `search_vector`. A search
parses the words once per configuration and ORs the results, so "running"
finds an English message that says "runs" and a French one that says
"courir" is found by "courent", all through one GIN index
(idx_messages_search_vector, migration 0015).

Only what the searcher may see (veza/messages/visibility.py), never a
deleted message. The newest RANKED matches are ranked by ts_rank, newest
first among equals, in pages after a (rank, id) cursor; each hit has a
ts_headline snippet of its content, HTML-escaped with the matches in <mark>.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from veza.messages.visibility import VISIBLE_TO_VIEWER

# ISO 639-1 codes of the languages PostgreSQL has a configuration for.
CONFIGS = {
    "ar": "arabic",
    "hy": "armenian",
    "eu": "basque",
    "ca": "catalan",
    "da": "danish",
    "nl": "dutch",
    "en": "english",
    "fi": "finnish",
    "fr": "french",
    "de": "german",
    "el": "greek",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "ga": "irish",
    "it": "italian",
    "lt": "lithuanian",
    "ne": "nepali",
    "no": "norwegian",
    "nb": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "es": "spanish",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
UNKNOWN = "simple"
# The words in every configuration a message may have been stemmed with, each
# distinct reading once (most languages stem a word alike): ts_rank's cost
# grows with the query's terms.
QUERY = (
    "(SELECT string_agg(DISTINCT '(' || query::text || ')', ' | ')::tsquery"
    " FROM (SELECT websearch_to_tsquery(config::regconfig, :q) AS query"
    "       FROM unnest(CAST(:configs AS text[])) config) readings"
    " WHERE query::text <> '')"
)
# Ranking reads every match's vector: a common word in a large history would
# rank hundreds of thousands. So the newest RANKED matches are ranked (found
# in id order through the index, no vector read), as chat search favours
# what is recent; a search shows at most this many results.
RANKED = 1000
HEADLINE = "MaxFragments=2, MaxWords=20, MinWords=5, StartSel=<mark>, StopSel=</mark>"
# The content as HTML text, for ts_headline to mark up safely.
ESCAPED = "replace(replace(replace(hits.content, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')"


def search_config(language: str | None) -> str:
    """The text search configuration a message in this language is stemmed with."""
    return CONFIGS.get(language or "", UNKNOWN)


@dataclass(frozen=True)
class Filters:
    room_id: int | None = None
    conversation_id: int | None = None
    author_id: int | None = None
    before: datetime | None = None


@dataclass(frozen=True)
class Hit:
    message_id: int
    rank: float
    snippet: str


def search(
    session: Session,
    viewer: int,
    words: str,
    filters: Filters,
    after: tuple[float, int] | None,
    limit: int,
) -> list[Hit]:
    """The best `limit` hits after the (rank, id) `after`, best first."""
    conditions = ["m.search_vector @@ q.query", "NOT m.is_deleted", VISIBLE_TO_VIEWER]
    params: dict[str, Any] = {
        "q": words,
        "configs": sorted({*CONFIGS.values(), UNKNOWN}),
        "viewer": viewer,
        "limit": limit,
        "ranked": RANKED,
    }
    for column, value in (
        ("room_id", filters.room_id),
        ("conversation_id", filters.conversation_id),
        ("author_id", filters.author_id),
    ):
        if value is not None:
            conditions.append(f"m.{column} = :{column}")
            params[column] = value
    if filters.before is not None:
        conditions.append("m.created_at < :before")
        params["before"] = filters.before
    page = "true"
    if after is not None:
        # real, as ts_rank gives it: the cursor holds its shortest decimal form.
        page = (
            "(hits.rank < CAST(:rank AS real)"
            " OR (hits.rank = CAST(:rank AS real) AND hits.id < :after_id))"
        )
        params |= {"rank": after[0], "after_id": after[1]}
    rows = session.execute(
        text(
            "SELECT hits.id, hits.rank,"
            f" ts_headline(hits.search_config, {ESCAPED}, hits.query, '{HEADLINE}') AS snippet"
            " FROM (SELECT newest.*, ts_rank(newest.search_vector, newest.query) AS rank"
            "  FROM (SELECT m.id, m.content, m.search_config, m.search_vector, q.query"
            f"   FROM messages m, (SELECT {QUERY} AS query) q"
            f"   WHERE {' AND '.join(conditions)}"
            "   ORDER BY m.id DESC LIMIT :ranked) newest) hits"
            f" WHERE {page}"
            " ORDER BY hits.rank DESC, hits.id DESC LIMIT :limit"
        ),
        params,
    )
    return [Hit(row.id, row.rank, row.snippet) for row in rows]
