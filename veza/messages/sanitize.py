"""HTML message content, made safe to render (nh3, the Rust ammonia
sanitizer): what a client sends as `content_type: "html"` is stored as
`content` only after this; `raw_content` keeps it as sent.

A small allow-list rather than nh3's defaults: text formatting, lists,
quotes, code and links. No images (a remote <img> tells its server who read
the message, and when), no styles, no event handlers, no forms. Links keep
http, https and mailto targets only and get rel="nofollow noopener", so a
link neither lends ranking to spam nor gives the opened page a handle on
the reader's window. Pure, with no Flask: workers (a later markdown
renderer, an import) call it too.
"""

from __future__ import annotations

import nh3

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3",
        "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li", "ol", "p", "pre", "q", "s",
        "span", "strong", "sub", "sup", "u", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "nofollow noopener"


def sanitize_html(raw: str) -> str:
    """The safe subset of `raw`: disallowed tags are dropped (their text
    kept, except script and style, whose content goes too), disallowed
    attributes and link targets removed, and the rest well-formed."""
    return nh3.clean(
        raw,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        link_rel=LINK_REL,
    )
