"""Message search: GET /search/messages (veza/messages/search.py does the
searching: each message in its own language, only what the caller may see)."""

from __future__ import annotations

import math

from flask import Blueprint, g
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.messages import fetch_messages
from api.schemas import SearchHit, SearchPage, SearchQuery
from api.spec import operation
from veza.messages.search import Filters, search

bp = Blueprint("search", __name__)


def cursor_position(cursor: str) -> tuple[float, int]:
    """The (rank, id) a cursor names: the schema checked its characters,
    this that the rank is a finite number."""
    rank, _, message_id = cursor.rpartition("_")
    try:
        value = float(rank)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(422, "validation_failed", "The query is not valid.", {"cursor": "unknown"})
    return value, int(message_id)


@operation(
    bp,
    "GET",
    "/search/messages",
    summary="Search the messages you can see, best match first",
    query=SearchQuery,
    responses={200: SearchPage},
)
def search_messages(session: Session, query: SearchQuery) -> SearchPage:
    filters = Filters(query.room_id, query.conversation_id, query.author_id, query.before)
    after = cursor_position(query.cursor) if query.cursor else None
    # One hit more than asked says whether another page exists.
    hits = search(session, g.user.id, query.q, filters, after, query.limit + 1)
    page, more = hits[: query.limit], len(hits) > query.limit
    found = {
        message.id: message
        for message in fetch_messages(
            session, "m.id = ANY(:ids)", {"ids": [hit.message_id for hit in page]}, limit=len(page)
        )
    }
    last = page[-1] if more else None
    return SearchPage(
        results=[
            SearchHit(message=found[hit.message_id], rank=hit.rank, snippet=hit.snippet)
            for hit in page
            if hit.message_id in found
        ],
        next_cursor=f"{last.rank!r}_{last.message_id}" if last else None,
    )
