"""What a reaction's emoji may be, and the one form it is stored in.

A reaction is one emoji, given either as a `:shortcode:` the `emoji`
package knows (its CLDR names and the common aliases: `:thumbs_up:`,
`:+1:`, `:heart:`) or as one Unicode emoji sequence (a single code point,
a skin-toned, ZWJ, flag or keycap sequence). It is stored as the fully
qualified Unicode sequence, so that `:+1:`, `:thumbs_up:` and 👍 are one
reaction, and so are ❤ (unqualified, without U+FE0F) and ❤️. A lone
component (a skin-tone modifier), two emoji, or any other text is refused.
"""

from __future__ import annotations

import re

import emoji

SHORTCODE = re.compile(r":[^:\s]+:")
FULLY_QUALIFIED = emoji.STATUS["fully_qualified"]
COMPONENT = emoji.STATUS["component"]


class NotAnEmoji(ValueError):
    def __init__(self) -> None:
        super().__init__("must be one emoji: a known :shortcode: or a Unicode emoji sequence")


def canonical_emoji(value: str) -> str:
    """The fully qualified Unicode form of one emoji, or NotAnEmoji."""
    candidate = emoji.emojize(value, language="alias") if SHORTCODE.fullmatch(value) else value
    data = emoji.EMOJI_DATA.get(candidate)
    if data is None or data["status"] == COMPONENT:
        raise NotAnEmoji()
    if data["status"] != FULLY_QUALIFIED:
        # The same emoji by its name: the package names each emoji once,
        # and the name's emoji is the fully qualified sequence.
        candidate = emoji.emojize(emoji.demojize(candidate))
    if emoji.EMOJI_DATA.get(candidate, {}).get("status") != FULLY_QUALIFIED:
        raise NotAnEmoji()
    return candidate
