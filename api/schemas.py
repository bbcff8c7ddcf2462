"""Request and response schemas (pydantic v2), one small model per body.

Request models are strict (no "5" for 5, no unknown fields) and their
strings refuse what PostgreSQL text cannot store (NUL, lone surrogates), so
bad input is a 4xx here rather than an error deep in the database. Response
models document the seed's JSON shapes; both feed GET /api/v1/openapi.json.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from veza.locales import language_tag, time_zone
from veza.messages.moderation import MAX_HOLD_THRESHOLD, AutoModerate
from veza.messages.reactions import canonical_emoji

USERNAME_PATTERN = r"^[a-zA-Z0-9_-]{3,50}$"
# The database's own valid_email check, so that what passes here is stored.
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
MAX_ID = 2**31 - 1


def storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("must be valid Unicode text") from err
    return value


def has_visible_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def blank_as_none(value: str) -> str | None:
    """A profile text of nothing but whitespace is no text: stored null, so
    that "no bio" has one form, whether cleared with null or with ""."""
    return value if value.strip() else None


T = TypeVar("T")


def refuse_null(value: T | None) -> T:
    """For a PATCH field that may be left out but not cleared (it always
    holds a value): pydantic does not validate an absent field's default,
    so only an explicit null reaches this."""
    if value is None:
        raise ValueError("may not be null")
    return value


def web_url(value: str | None) -> str | None:
    """An http or https URL with a host, or None (after blank_as_none). A
    client puts it in an <img src>: no other scheme (javascript:, data:,
    file:), and no whitespace or control character, which browsers strip or
    stop at, each in its own way."""
    if value is None:
        return None
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        has_host = bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError as err:  # an unclosed [IPv6] bracket, a port out of range
        raise ValueError("must be an http or https URL") from err
    if parts.scheme.lower() not in {"http", "https"} or not has_host:
        raise ValueError("must be an http or https URL")
    return value


# Every client-supplied instant lies in this range, checked at input: a
# value outside it is a 422 and never reaches the database. PostgreSQL
# stores instants Python cannot read back (year 0 and BC, after 9999), and a
# row holding one answers an error on every read of it. Nothing a client
# may date is older than this project or more than a decade ahead.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_AHEAD = timedelta(days=3653)
# A mute or a ban given a time lasts at most a year (and a day, for leap
# years); one meant to last longer is given without a time (a mute lasts
# until lifted) or given again.
MAX_SANCTION = timedelta(days=366)


def sane_instant(value: datetime) -> datetime:
    try:
        in_range = EARLIEST_INSTANT <= value <= datetime.now(UTC) + LATEST_AHEAD
    except OverflowError:  # within a day of year 1 or 9999, in UTC
        in_range = False
    if not in_range:
        raise ValueError("must lie between 2000-01-01 and 10 years from now")
    return value


def in_the_coming_year(value: datetime) -> datetime:
    now = datetime.now(UTC)
    if not now < sane_instant(value) <= now + MAX_SANCTION:
        raise ValueError("must be in the future, at most 366 days ahead")
    return value


Text = Annotated[str, AfterValidator(storable)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Username = Annotated[Text, StringConstraints(pattern=USERNAME_PATTERN)]
Email = Annotated[Text, StringConstraints(pattern=EMAIL_PATTERN, max_length=255)]
Password = Annotated[Text, StringConstraints(min_length=8, max_length=1024)]
MAX_CONTENT_LENGTH = 4000  # messages' valid_content CHECK
Content = Annotated[
    Text,
    StringConstraints(min_length=1, max_length=MAX_CONTENT_LENGTH),
    AfterValidator(has_visible_text),
]
RoomName = Annotated[
    Text, StringConstraints(min_length=1, max_length=100), AfterValidator(has_visible_text)
]
OtpCode = Annotated[Text, StringConstraints(min_length=1, max_length=64)]
# One emoji, as a :shortcode: or a Unicode sequence, turned into its fully
# qualified Unicode form (veza/messages/reactions.py); 100 characters bound
# the work before the lookup (the longest shortcode has 78).
Emoji = Annotated[
    Text, StringConstraints(min_length=1, max_length=100), AfterValidator(canonical_emoji)
]
ContentType = Literal["text", "markdown", "html", "code"]
MemberRole = Literal["member", "moderator", "admin"]


class Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ------------------------------------------------------------------ input


class RegisterIn(Input):
    username: Username
    email: Email
    password: Password
    display_name: Annotated[Text, StringConstraints(max_length=100)] | None = None


class LoginIn(Input):
    login: Annotated[Text, StringConstraints(min_length=1, max_length=255)]
    password: Annotated[Text, StringConstraints(min_length=1, max_length=1024)]
    # With 2FA on: a TOTP code (6 digits) or an unused backup code.
    otp: OtpCode | None = None


# users' columns bound these, bio (text) excepted: 1000 characters is a bio,
# not a document.
DisplayName = Annotated[Text, StringConstraints(max_length=100), AfterValidator(blank_as_none)]
Bio = Annotated[Text, StringConstraints(max_length=1000), AfterValidator(blank_as_none)]
AvatarUrl = Annotated[
    Text, StringConstraints(max_length=500), AfterValidator(blank_as_none), AfterValidator(web_url)
]
StatusMessage = Annotated[Text, StringConstraints(max_length=200), AfterValidator(blank_as_none)]
TimeZone = Annotated[Text, StringConstraints(max_length=50), AfterValidator(time_zone)]
LanguageTag = Annotated[Text, StringConstraints(max_length=10), AfterValidator(language_tag)]


class ProfilePatch(Input):
    """PATCH /users/me: only the fields sent change. A text sent as null or
    blank clears it; timezone and language always hold one (null is a 422)."""

    display_name: DisplayName | None = None
    bio: Bio | None = None
    avatar_url: AvatarUrl | None = None
    status_message: StatusMessage | None = None
    timezone: Annotated[TimeZone | None, AfterValidator(refuse_null)] = None
    language: Annotated[LanguageTag | None, AfterValidator(refuse_null)] = None


class AccountDeleteIn(Input):
    password: Annotated[Text, StringConstraints(min_length=1, max_length=1024)]
    # With 2FA on: a TOTP code or an unused backup code.
    otp: OtpCode | None = None


class PasswordChangeIn(Input):
    current_password: Annotated[Text, StringConstraints(min_length=1, max_length=1024)]
    new_password: Password


class TwoFactorEnableIn(Input):
    code: OtpCode


class TwoFactorDisableIn(Input):
    password: Annotated[Text, StringConstraints(min_length=1, max_length=1024)]
    # A TOTP code or an unused backup code.
    code: OtpCode


class RefreshIn(Input):
    refresh_token: Annotated[Text, StringConstraints(min_length=1, max_length=200)]


class RoomSettings(Input):
    """Every room setting; all optional, so PATCH changes only what is sent."""

    description: Annotated[Text, StringConstraints(max_length=5000)] | None = None
    topic: Annotated[Text, StringConstraints(max_length=500)] | None = None
    is_public: bool | None = None
    max_members: Annotated[int, Field(ge=1, le=10000)] | None = None
    slow_mode_seconds: Annotated[int, Field(ge=0, le=3600)] | None = None
    message_retention_days: Annotated[int, Field(ge=0, le=36500)] | None = None
    is_nsfw: bool | None = None
    welcome_message: Annotated[Text, StringConstraints(max_length=5000)] | None = None
    rules: Annotated[Text, StringConstraints(max_length=5000)] | None = None


class RoomCreate(RoomSettings):
    name: RoomName


class RoomMetadataIn(Input):
    """The writable keys of a room's metadata. Each key sent replaces that
    key (auto_moderate as a whole), null removes it (back to its default),
    and keys not sent are kept."""

    auto_moderate: AutoModerate | None = None
    theme: Annotated[Text, StringConstraints(min_length=1, max_length=50)] | None = None
    allow_bots: bool | None = None
    # Distinct reporters who hold a message; unset, FLAG_HOLD_THRESHOLD.
    flag_hold_threshold: Annotated[int, Field(ge=1, le=MAX_HOLD_THRESHOLD)] | None = None


class RoomPatch(RoomSettings):
    name: RoomName | None = None
    is_archived: bool | None = None
    metadata: RoomMetadataIn | None = None


class MemberAdd(Input):
    """Empty to join a public room yourself; user_id to invite someone."""

    user_id: Id | None = None


class MemberPatch(Input):
    role: MemberRole | None = None
    can_invite: bool | None = None
    can_manage_messages: bool | None = None
    can_manage_members: bool | None = None
    is_muted: bool | None = None
    # With is_muted: the mute ends then; without, it lasts until lifted.
    muted_until: Annotated[AwareDatetime, AfterValidator(in_the_coming_year)] | None = None


class MessageIn(Input):
    content: Content
    content_type: ContentType = "text"
    parent_message_id: Id | None = None


class MessageEdit(Input):
    content: Content


class ReactionIn(Input):
    emoji: Emoji


class ReadIn(Input):
    message_id: Id


ModerationReason = Annotated[
    Text, StringConstraints(min_length=1, max_length=1000), AfterValidator(has_visible_text)
]


class ReportIn(Input):
    reason: ModerationReason


class ModerationIn(Input):
    action: Literal["approve", "reject"]
    reason: ModerationReason | None = None


NotificationLevel = Literal["none", "mentions", "all"]
# The most notifications one call marks read by id; `up_to` marks any number.
MAX_MARKED_IDS = 500
# Notifications are many (a row per recipient and message): their ids are bigint.
NotificationId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class NotificationsReadIn(Input):
    """Exactly one of `ids` (these notifications) and `up_to` (every one up
    to this id)."""

    ids: Annotated[list[NotificationId], Field(min_length=1, max_length=MAX_MARKED_IDS)] | None = (
        None
    )
    up_to: NotificationId | None = None

    @model_validator(mode="after")
    def _one_of(self) -> NotificationsReadIn:
        if (self.ids is None) == (self.up_to is None):
            raise ValueError("give exactly one of ids and up_to")
        return self


class NotificationLevelIn(Input):
    level: NotificationLevel


class NotificationSettingsIn(Input):
    email: bool


class ConversationIn(Input):
    user_id: Id


class KickQuery(BaseModel):
    """A kick bans from the room for ban_seconds (default
    KICK_BAN_DEFAULT_SECONDS), at most MAX_SANCTION."""

    model_config = ConfigDict(extra="forbid")

    ban_seconds: Annotated[int, Field(ge=1, le=int(MAX_SANCTION.total_seconds()))] | None = None


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    before: Id | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


# A place in a list ordered by last activity, newest first: the activity's
# microseconds since the epoch, and the id that breaks ties (api/paging.py).
ActivityCursor = Annotated[str, Field(pattern=r"^[0-9]{1,17}-[0-9]{1,10}$", max_length=28)]


class ActivityPageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Pass the last page's next_cursor for the next (less recently active) one.
    cursor: ActivityCursor | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


# ----------------------------------------------------------------- output


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: dict[str, Any]


class ErrorBody(BaseModel):
    error: ErrorDetail


class UserOut(BaseModel):
    id: int
    uuid: uuid.UUID
    username: str
    email: str | None = None  # only to the user themself
    display_name: str | None
    bio: str | None
    avatar_url: str | None
    status_message: str | None
    timezone: str | None
    language: str | None
    role: str
    is_active: bool
    is_verified: bool
    last_login_at: datetime | None
    last_seen_at: datetime | None
    totp_enabled: bool | None  # only to the user themself: who lacks 2FA is a target list
    created_at: datetime
    updated_at: datetime


class ProfileOut(UserOut):
    """The seed's user JSON: the user, and whether they are online now
    (api/sessions.py, is_online)."""

    is_online: bool


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: datetime
    refresh_expires_at: datetime
    user: UserOut


class DeviceInfo(BaseModel):
    """From the session's user agent (ua-parser); null where it does not say."""

    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    os_version: str | None = None
    device: str | None = None
    brand: str | None = None
    model: str | None = None


class LocationInfo(BaseModel):
    """What is known offline of where a session was opened: the kind of
    network of its address (no geolocation database ships)."""

    network: Literal["loopback", "private", "link-local", "public", "reserved"] | None = None


class SessionOut(BaseModel):
    """One login and the refreshes descended from it."""

    id: uuid.UUID
    current: bool  # the session of the token making this request
    signed_in_at: datetime
    last_activity_at: datetime  # to the minute
    expires_at: datetime  # when its refresh token runs out, unless refreshed
    ip_address: str | None
    user_agent: str | None
    device_info: DeviceInfo | None
    location_info: LocationInfo | None


class SessionsOut(BaseModel):
    sessions: list[SessionOut]  # most recently active first


class TwoFactorSetupOut(BaseModel):
    secret: str  # base32, for an authenticator app typed by hand
    otpauth_uri: str  # the same, as a QR code's content


class BackupCodesOut(BaseModel):
    backup_codes: list[str]  # shown this once; each works once


class UserRef(BaseModel):
    id: int
    username: str
    display_name: str | None


class Author(UserRef):
    avatar_url: str | None


class RoomOut(BaseModel):
    id: int
    uuid: uuid.UUID
    name: str
    description: str | None
    topic: str | None
    is_public: bool
    is_archived: bool
    max_members: int
    message_retention_days: int
    owner: UserRef
    member_count: int
    message_count: int
    last_activity_at: datetime | None
    slow_mode_seconds: int
    is_nsfw: bool
    welcome_message: str | None
    rules: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class MemberOut(BaseModel):
    room_id: int
    user: UserRef
    role: MemberRole
    is_owner: bool
    can_invite: bool
    can_manage_messages: bool
    can_manage_members: bool
    is_muted: bool
    muted_until: datetime | None
    last_read_message_id: int | None
    joined_at: datetime
    invited_by: int | None


class JoinedMemberOut(MemberOut):
    """The answer to a join: the new membership, with the room's welcome
    message as it is now (null when the room has none). The joiner reads it
    once here, in the answer to their own action; GET /rooms/{id} keeps
    showing it."""

    welcome_message: str | None


class BanOut(BaseModel):
    room_id: int
    user: UserRef
    banned_until: datetime
    banned_by: int | None
    created_at: datetime


class BanList(BaseModel):
    bans: list[BanOut]


class ReactionUser(BaseModel):
    user_id: int
    username: str


class ReactionSummary(BaseModel):
    count: int
    users: list[ReactionUser]
    has_user_reacted: bool


class MessageOut(BaseModel):
    id: int
    uuid: uuid.UUID
    room_id: int | None
    conversation_id: int | None
    author: Author
    content: str
    content_type: ContentType
    raw_content: str | None
    parent_message_id: int | None
    thread_count: int
    is_thread_root: bool
    is_edited: bool
    edit_count: int
    edited_at: datetime | None
    is_deleted: bool
    is_pinned: bool
    mentions: list[int]
    referenced_message_ids: list[int]
    reactions: dict[str, ReactionSummary]
    reaction_count: int
    is_flagged: bool
    flag_count: int
    moderation_status: str
    # Why the system or a moderator flagged, held, rejected or approved it.
    moderation_reason: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    # Filled in after the post or edit by messages.index: `pending` until
    # then, `done` once rendered_html, metadata.language_detected,
    # metadata.code_snippets and referenced_message_ids are the content's.
    rendered_html: str | None
    enrichment: Literal["pending", "done"]


class ReportOut(BaseModel):
    id: int
    message_id: int
    reason: str
    created_at: datetime


class MessagePage(BaseModel):
    messages: list[MessageOut]
    # Pass as ?before= for the next (older) page; null on the last page.
    next_before: int | None


class UnreadOut(BaseModel):
    room_id: int
    unread_count: int


class RoomStatsOut(BaseModel):
    room_id: int
    member_count: int
    total_messages: int
    messages_24h: int
    messages_7d: int
    active_users_24h: int
    last_message_at: datetime | None
    reactions_24h: int


class ConversationOut(BaseModel):
    id: int
    uuid: uuid.UUID
    participant_ids: list[int]
    participants: list[UserRef]
    is_blocked: bool
    message_count: int
    last_activity_at: datetime | None
    created_at: datetime


class InboxConversation(ConversationOut):
    """One of the caller's DMs, with the caller's read state."""

    unread_count: int
    last_read_message_id: int | None


class ConversationPage(BaseModel):
    conversations: list[InboxConversation]
    next_cursor: str | None


class RoomPage(BaseModel):
    rooms: list[RoomOut]
    next_cursor: str | None


class NotificationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unread: bool = False
    before: NotificationId | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 50


class NotificationMessage(BaseModel):
    id: int
    content: str
    author: UserRef
    created_at: datetime


class NotificationOut(BaseModel):
    id: int
    kind: Literal["message", "reply", "mention", "dm"]
    room_id: int | None
    conversation_id: int | None
    message: NotificationMessage
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    notifications: list[NotificationOut]
    unread_count: int
    next_before: int | None


class NotificationsMarkedOut(BaseModel):
    marked: int
    unread_count: int


class ExportOut(BaseModel):
    id: int
    status: Literal["pending", "running", "done", "failed", "expired"]
    phase: str | None
    size_bytes: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    # While done and not expired: GET it (with the bearer token) for the zip.
    download_url: str | None


class NotificationSettingsOut(BaseModel):
    email: bool


class NotificationLevelOut(BaseModel):
    level: NotificationLevel


class ConversationUnreadOut(BaseModel):
    conversation_id: int
    unread_count: int


class SearchQuery(BaseModel):
    """GET /search/messages: words (web-search syntax: "a phrase", -word,
    or), narrowed by place, author or time; pages after next_cursor."""

    model_config = ConfigDict(extra="forbid")

    q: Annotated[Text, StringConstraints(min_length=1, max_length=200)]
    room_id: Id | None = None
    conversation_id: Id | None = None
    author_id: Id | None = None
    before: Annotated[AwareDatetime, AfterValidator(sane_instant)] | None = None
    # A hit's rank and id (api/search.py); opaque to clients.
    cursor: Annotated[str, Field(pattern=r"^[0-9.eE+-]{1,24}_[0-9]{1,10}$")] | None = None
    limit: Annotated[int, Field(ge=1, le=50)] = 20


class SearchHit(BaseModel):
    message: MessageOut
    rank: float
    # The content around the matches, HTML-escaped, the matches in <mark>.
    snippet: str


class SearchPage(BaseModel):
    results: list[SearchHit]
    next_cursor: str | None


class ThumbnailQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The long side wanted, in pixels: the nearest rendition made is served.
    size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    # For an animated image: its still (the first frame), not the animation.
    still: bool = False


class FileOut(BaseModel):
    id: int
    uuid: uuid.UUID
    original_filename: str
    file_size: int
    mime_type: str
    file_hash: str | None
    room_id: int | None
    conversation_id: int | None
    message_id: int | None
    uploaded_by: int
    processing_status: Literal["pending", "processing", "completed", "failed"]
    virus_scan_status: Literal["pending", "scanning", "clean", "infected", "failed"]
    virus_scan_result: str | None
    is_processed: bool
    has_thumbnail: bool
    metadata: dict[str, Any]
    created_at: datetime
