"""What a message's content says beyond its text, worked out after commit
by messages.index (tasks/messages.py) for every post and edit:

- `rendered_html`: the content as HTML for clients. Markdown and text go
  through CommonMark (markdown-it-py, raw HTML off, so a `<script>` in a
  message stays text), then the sanitiser every message HTML goes through
  (veza/messages/sanitize.py: links get rel="nofollow noopener"). HTML
  content was sanitised when it was written and is used as it is. Code is
  its text, escaped, in <pre><code>.
- `metadata.language_detected`: an ISO 639-1 code from py3langid (its model
  ships in the wheel: nothing is downloaded), taken on the prose alone
  (fenced code blocks, inline code, links and @mentions left out), or null
  when there is too little prose to tell or the detector is unsure.
- `metadata.code_snippets`: the languages of the fenced code blocks, in
  order of appearance (a block with no language counts as nothing).
- `referenced_message_ids`: messages the content links to
  (`…/messages/<id>`) that the author may see.
- `search_config` and `search_vector`: the content stemmed in the detected
  language, for search (veza/messages/search.py).

The work is a pure function of the content (`enrichment`) and one UPDATE
guarded by the edit count it read (`enrich`), so running it twice, late, or
racing an edit leaves the newest content's enrichment. The same `enrich`
serves messages.index (`enrich_messages`, the messages it was owed) and the backfill of
messages it never reached (veza/messages/backfill.py, a batch at a time).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from sqlalchemy import RowMapping, text
from sqlalchemy.orm import Session

from db.engine import affected
from veza.messages.sanitize import sanitize_html
from veza.messages.search import search_config
from veza.messages.visibility import VISIBLE_TO_VIEWER

# Below this many letters of prose, or below this confidence, no language
# is claimed: "ok" or "+1" is every language and none.
MIN_LETTERS = 12
MIN_CONFIDENCE = 0.8
# A link to a message of this server: its path ends /messages/<id>.
MESSAGE_LINK = re.compile(r"/messages/([0-9]{1,10})\b")
# What is not prose, for the language detector: links, @mentions, inline
# code, and (in HTML content) the tags.
NOT_PROSE = re.compile(r"https?://\S+|@\w+|`[^`\n]*`|<[^>]*>")
LETTER = re.compile(r"[^\W\d_]")


@cache
def _markdown() -> MarkdownIt:
    # CommonMark with raw HTML off: a tag in a message is text, not markup.
    return MarkdownIt("commonmark", {"html": False})


@cache
def _languages() -> LanguageIdentifier:
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@dataclass(frozen=True)
class Enrichment:
    rendered_html: str
    language: str | None
    code_snippets: list[str] = field(default_factory=list)
    linked_message_ids: list[int] = field(default_factory=list)


def enrichment(content: str, content_type: str) -> Enrichment:
    """Everything enrichment adds to this content, by its type."""
    if content_type == "code":
        return Enrichment(f"<pre><code>{html.escape(content)}</code></pre>", None)
    links = sorted({int(found) for found in MESSAGE_LINK.findall(content)})
    if content_type == "html":  # sanitised when written
        return Enrichment(content, detected_language(content), [], links)
    tokens = _markdown().parse(content)
    fences = [token for token in tokens if token.type == "fence"]
    snippets = [token.info.split()[0] for token in fences if token.info.strip()]
    prose = "\n".join(
        token.content for token in tokens if token.type == "inline"
    )  # paragraphs, headings, list items: never code blocks
    rendered = sanitize_html(_markdown().renderer.render(tokens, _markdown().options, {}))
    return Enrichment(rendered, detected_language(prose), snippets, links)


def detected_language(prose: str) -> str | None:
    words = NOT_PROSE.sub(" ", prose)
    if len(LETTER.findall(words)) < MIN_LETTERS:
        return None
    language, confidence = _languages().classify(words)
    return str(language) if confidence >= MIN_CONFIDENCE else None


# The keys enrichment writes into a message's metadata: derived from its
# content, so they go with it when a deleted message is scrubbed (scrub.py).
DERIVED_METADATA = ("language_detected", "code_snippets")
# What enrichment reads of a message (`enrich`'s rows): its key, its content,
# its author (for the links) and the edit count that guards the write.
COLUMNS = "id, created_at, content, content_type::text AS content_type, author_id, edit_count"
# The write, guarded by the edit count read.
WRITE = text(
    "UPDATE messages SET rendered_html = :rendered,"
    " metadata = metadata || CAST(:metadata AS jsonb),"
    " referenced_message_ids = :referenced, enriched_at = now(),"
    " search_config = CAST(:config AS regconfig),"
    " search_vector = to_tsvector(CAST(:config AS regconfig), content)"
    " WHERE id = :id AND created_at = :created_at AND edit_count = :edit_count"
)


def enrich_messages(session: Session, message_ids: Sequence[int]) -> int:
    """Enrich these messages as they are now, read in one query and written
    in one executemany; the number written (a message gone is skipped). The
    write is guarded by the edit count read: an edit committed meanwhile
    owes its own run, which enriches the newer content."""
    messages = (
        session.execute(
            text(
                f"SELECT {COLUMNS} FROM messages"
                " WHERE id = ANY(:ids) AND NOT is_deleted ORDER BY id"
            ),
            {"ids": list(message_ids)},
        )
        .mappings()
        .all()
    )
    return enrich(session, messages)


def enrich(session: Session, messages: Sequence[RowMapping]) -> int:
    """Write the enrichment of `messages` (rows of COLUMNS), all of them in
    one executemany; the number written. A message edited since its row was
    read is left as it is (the guard): the edit's own run enriches it.
    messages.index passes the messages it was owed, the enrichment
    backfill (veza/messages/backfill.py) a batch it holds locked."""
    if not messages:
        return 0
    writes = []
    for message in messages:
        found = enrichment(message["content"], message["content_type"])
        metadata: dict[str, Any] = dict(
            zip(DERIVED_METADATA, (found.language, found.code_snippets), strict=True)
        )
        writes.append(
            {
                "rendered": found.rendered_html,
                "metadata": json.dumps(metadata),
                "referenced": visible_to_author(
                    session, message["author_id"], found.linked_message_ids
                ),
                "config": search_config(found.language),
                "id": message["id"],
                "created_at": message["created_at"],
                "edit_count": message["edit_count"],
            }
        )
    return affected(session.execute(WRITE, writes))


def visible_to_author(session: Session, author_id: int, message_ids: list[int]) -> list[int]:
    """Of these messages, the live ones the author may see: in a public room
    or one they are in (within its retention), or in one of their DMs."""
    if not message_ids:
        return []
    return sorted(
        session.scalars(
            text(
                "SELECT m.id FROM messages m WHERE m.id = ANY(:ids) AND NOT m.is_deleted"
                f" AND {VISIBLE_TO_VIEWER}"
            ),
            {"ids": message_ids, "viewer": author_id},
        )
    )
