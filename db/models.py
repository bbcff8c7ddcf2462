"""SQLAlchemy 2 typed models of the schema in db/migrations.

They mirror the migrations exactly (tests/test_schema.py runs Alembic's
compare_metadata against a migrated database). Triggers, functions and the
room_stats view (over room_stats_rollup) live in the migration SQL only.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, INET, JSONB, REGCONFIG, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

TZDateTime = DateTime(timezone=True)
NOW = text("now()")


class Base(DeclarativeBase):
    metadata = MetaData()
    type_annotation_map: ClassVar[dict[Any, TypeEngine[Any] | type[TypeEngine[Any]]]] = {
        datetime: TZDateTime,
        dict[str, Any]: JSONB,
        uuid.UUID: UUID(as_uuid=True),
    }


def pg_enum(py_enum: type[enum.Enum], name: str) -> Enum:
    """A PostgreSQL enum whose labels are the Python enum's values."""
    return Enum(py_enum, name=name, values_callable=lambda e: [m.value for m in e])


class UserRole(enum.Enum):
    guest = "guest"
    user = "user"
    moderator = "moderator"
    admin = "admin"


class RoomMemberRole(enum.Enum):
    member = "member"
    moderator = "moderator"
    admin = "admin"


class NotificationLevel(enum.Enum):
    none = "none"
    mentions = "mentions"
    all = "all"


class NotificationKind(enum.Enum):
    """Why a notification was written, weakest to strongest (migration 0016)."""

    message = "message"
    reply = "reply"
    mention = "mention"
    dm = "dm"


class MessageContentType(enum.Enum):
    text = "text"
    markdown = "markdown"
    html = "html"
    code = "code"


class ModerationStatus(enum.Enum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    flagged = "flagged"


class FileProcessingStatus(enum.Enum):
    pending = "pending"
    processing = "processing"
    completed = "completed"
    failed = "failed"


class VirusScanStatus(enum.Enum):
    pending = "pending"
    scanning = "scanning"
    clean = "clean"
    infected = "infected"
    failed = "failed"


class AuditSeverity(enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"
    critical = "critical"


def uuid_column() -> Mapped[uuid.UUID]:
    return mapped_column(server_default=text("gen_random_uuid()"), unique=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            "email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$'", name="valid_email"
        ),
        CheckConstraint("username ~* '^[a-zA-Z0-9_-]{3,50}$'", name="valid_username"),
        CheckConstraint("timezone IS NULL OR length(timezone) <= 50", name="valid_timezone"),
        Index("idx_users_username", "username"),
        Index("idx_users_email", "email"),
        Index("idx_users_role", "role"),
        Index("idx_users_active", "is_active", postgresql_where=text("is_active = true")),
        Index("idx_users_last_seen", "last_seen_at"),
        Index("idx_users_created_at", "created_at"),
        # 0004: emails are unique whatever their case.
        Index("idx_users_email_lower", text("lower(email)"), unique=True),
        # 0009: usernames too.
        Index("idx_users_username_lower", text("lower(username)"), unique=True),
        # 0019: the erasure's due list.
        Index(
            "idx_users_erasure_due",
            "deleted_at",
            postgresql_where=text("deleted_at IS NOT NULL AND erased_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = uuid_column()
    username: Mapped[str] = mapped_column(String(50), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    salt: Mapped[str | None] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(100))
    bio: Mapped[str | None] = mapped_column(Text)
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    status_message: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(50), server_default="UTC")
    language: Mapped[str | None] = mapped_column(String(10), server_default="fr")
    role: Mapped[UserRole] = mapped_column(pg_enum(UserRole, "user_role"), server_default="user")
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    is_verified: Mapped[bool] = mapped_column(server_default=text("false"))
    last_login_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    failed_login_attempts: Mapped[int] = mapped_column(server_default=text("0"))
    locked_until: Mapped[datetime | None]
    # 0009: a Fernet token of the secret (veza/two_factor.py), hence TEXT.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(server_default=text("false"))
    # SHA-256 digests of the unused backup codes (veza/two_factor.py).
    backup_codes: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    # 0009: the time step of the last TOTP code accepted (no replay).
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=NOW)
    deleted_at: Mapped[datetime | None]
    # 0016: missed-message emails wanted, and when the last one went.
    email_notifications: Mapped[bool] = mapped_column(server_default=text("true"))
    notification_email_at: Mapped[datetime | None]
    # 0019: when a deleted account's erasure finished (veza/accounts/erasure.py).
    erased_at: Mapped[datetime | None]


class Room(Base):
    __tablename__ = "rooms"
    __table_args__ = (
        CheckConstraint("length(name) >= 1 AND length(name) <= 100", name="valid_name"),
        CheckConstraint("max_members > 0 AND max_members <= 10000", name="valid_max_members"),
        CheckConstraint(
            "slow_mode_seconds >= 0 AND slow_mode_seconds <= 3600", name="valid_slow_mode"
        ),
        CheckConstraint("message_retention_days >= 0", name="valid_retention"),
        CheckConstraint("member_count >= 0 AND message_count >= 0", name="valid_counts"),
        Index("idx_rooms_name", "name"),
        Index("idx_rooms_owner", "owner_id"),
        Index("idx_rooms_public", "is_public", postgresql_where=text("is_public = true")),
        Index("idx_rooms_active", "is_archived", postgresql_where=text("is_archived = false")),
        Index("idx_rooms_activity", "last_activity_at"),
        # GET /rooms's order (migration 0013).
        Index(
            "idx_rooms_discovery",
            text("COALESCE(last_activity_at, created_at) DESC"),
            text("id DESC"),
            postgresql_where=text("is_archived = false"),
        ),
        Index("idx_rooms_created_at", "created_at"),
        Index("idx_rooms_metadata", "metadata", postgresql_using="gin"),
        Index("idx_rooms_retention", "id", postgresql_where=text("message_retention_days > 0")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = uuid_column()
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    topic: Mapped[str | None] = mapped_column(String(500))
    is_public: Mapped[bool] = mapped_column(server_default=text("true"))
    is_archived: Mapped[bool] = mapped_column(server_default=text("false"))
    max_members: Mapped[int] = mapped_column(server_default=text("1000"))
    message_retention_days: Mapped[int] = mapped_column(server_default=text("0"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    member_count: Mapped[int] = mapped_column(server_default=text("0"))
    message_count: Mapped[int] = mapped_column(server_default=text("0"))
    last_activity_at: Mapped[datetime | None]
    slow_mode_seconds: Mapped[int] = mapped_column(server_default=text("0"))
    is_nsfw: Mapped[bool] = mapped_column(server_default=text("false"))
    welcome_message: Mapped[str | None] = mapped_column(Text)
    rules: Mapped[str | None] = mapped_column(Text)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=NOW)


# Instants psycopg can read back into Python (0008): no BC, nothing past 9999.
READABLE_INSTANT = "BETWEEN '2000-01-01 00:00:00+00' AND '9999-01-01 00:00:00+00'"


class RoomMute(Base):
    """A mute in force when its member left or was kicked (0004), applied
    again when they rejoin the room."""

    __tablename__ = "room_mutes"
    __table_args__ = (
        Index("idx_room_mutes_user", "user_id"),
        CheckConstraint(f"muted_until {READABLE_INSTANT}", name="valid_muted_until"),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    muted_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class RoomBan(Base):
    """A kick's ban (0008): the user cannot rejoin or be invited back before
    banned_until; lifting it early takes banned_by_rank or more."""

    __tablename__ = "room_bans"
    __table_args__ = (
        Index("idx_room_bans_user", "user_id"),
        CheckConstraint(f"banned_until {READABLE_INSTANT}", name="valid_banned_until"),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    banned_until: Mapped[datetime]
    banned_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    banned_by_rank: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class RoomMember(Base):
    __tablename__ = "room_members"
    __table_args__ = (
        UniqueConstraint("room_id", "user_id", name="room_members_room_id_user_id_key"),
        CheckConstraint(
            "custom_nickname IS NULL OR length(custom_nickname) <= 100", name="valid_nickname"
        ),
        Index("idx_room_members_room", "room_id"),
        Index("idx_room_members_user", "user_id"),
        Index("idx_room_members_role", "role"),
        Index(
            "idx_room_members_active",
            "room_id",
            "user_id",
            postgresql_where=text("is_muted = false"),
        ),
        Index("idx_room_members_joined", "joined_at"),
        CheckConstraint(f"muted_until {READABLE_INSTANT}", name="valid_muted_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[RoomMemberRole] = mapped_column(
        pg_enum(RoomMemberRole, "room_member_role"), server_default="member"
    )
    can_invite: Mapped[bool] = mapped_column(server_default=text("false"))
    can_manage_messages: Mapped[bool] = mapped_column(server_default=text("false"))
    can_manage_members: Mapped[bool] = mapped_column(server_default=text("false"))
    is_muted: Mapped[bool] = mapped_column(server_default=text("false"))
    muted_until: Mapped[datetime | None]
    notification_level: Mapped[NotificationLevel] = mapped_column(
        pg_enum(NotificationLevel, "notification_level"), server_default="all"
    )
    message_count: Mapped[int] = mapped_column(server_default=text("0"))
    last_read_message_id: Mapped[int | None]
    joined_at: Mapped[datetime] = mapped_column(server_default=NOW)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    custom_nickname: Mapped[str | None] = mapped_column(String(100))


class DirectConversation(Base):
    __tablename__ = "direct_conversations"
    __table_args__ = (
        CheckConstraint("array_length(participant_ids, 1) = 2", name="valid_participants"),
        CheckConstraint("participant_ids[1] < participant_ids[2]", name="ordered_participants"),
        CheckConstraint("message_count >= 0", name="valid_dm_message_count"),
        Index("idx_direct_conversations_participants", "participant_ids", unique=True),
        Index("idx_direct_conversations_participant", "participant_ids", postgresql_using="gin"),
        Index("idx_direct_conversations_active", "last_activity_at"),
        Index("idx_direct_conversations_blocked", "id", postgresql_where=text("is_blocked = true")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = uuid_column()
    participant_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer))
    is_blocked: Mapped[bool] = mapped_column(server_default=text("false"))
    blocked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    message_count: Mapped[int] = mapped_column(server_default=text("0"))
    last_activity_at: Mapped[datetime | None]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=NOW)


class DirectConversationParticipant(Base):
    __tablename__ = "direct_conversation_participants"
    __table_args__ = (
        UniqueConstraint(
            "conversation_id",
            "user_id",
            name="direct_conversation_participants_conversation_id_user_id_key",
        ),
        Index("idx_dm_participants_conversation", "conversation_id"),
        Index("idx_dm_participants_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("direct_conversations.id", ondelete="CASCADE")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    notification_level: Mapped[NotificationLevel] = mapped_column(
        pg_enum(NotificationLevel, "notification_level"), server_default="all"
    )
    last_read_message_id: Mapped[int | None]
    unread_count: Mapped[int] = mapped_column(server_default=text("0"))
    joined_at: Mapped[datetime] = mapped_column(server_default=NOW)


def message_reference(name: str, id_column: str, created_column: str) -> ForeignKeyConstraint:
    """A reference to a message: messages is partitioned, so its key is
    (id, created_at) and every reference carries both."""
    return ForeignKeyConstraint(
        [id_column, created_column],
        ["messages.id", "messages.created_at"],
        name=name,
        ondelete="CASCADE",
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        PrimaryKeyConstraint("id", "created_at", name="messages_pkey"),
        UniqueConstraint("uuid", "created_at", name="messages_uuid_created_at_key"),
        message_reference("messages_parent_fkey", "parent_message_id", "parent_created_at"),
        CheckConstraint(
            "(room_id IS NOT NULL AND conversation_id IS NULL) OR "
            "(room_id IS NULL AND conversation_id IS NOT NULL)",
            name="message_location_check",
        ),
        CheckConstraint(
            "length(trim(content)) > 0 AND length(content) <= 4000", name="valid_content"
        ),
        CheckConstraint("thread_count >= 0", name="valid_thread_count"),
        CheckConstraint("edit_count >= 0", name="valid_edit_count"),
        CheckConstraint(
            "(parent_message_id IS NULL) = (parent_created_at IS NULL)", name="valid_parent_ref"
        ),
        Index(
            "idx_messages_room",
            "room_id",
            text("created_at DESC"),
            postgresql_where=text("room_id IS NOT NULL"),
        ),
        Index(
            "idx_messages_conversation",
            "conversation_id",
            text("created_at DESC"),
            postgresql_where=text("conversation_id IS NOT NULL"),
        ),
        Index("idx_messages_author", "author_id", text("created_at DESC")),
        Index(
            "idx_messages_parent",
            "parent_message_id",
            postgresql_where=text("parent_message_id IS NOT NULL"),
        ),
        Index("idx_messages_thread_root", "id", postgresql_where=text("is_thread_root = true")),
        Index("idx_messages_pinned", "room_id", postgresql_where=text("is_pinned = true")),
        Index("idx_messages_flagged", "id", postgresql_where=text("is_flagged = true")),
        Index("idx_messages_mentions", "mentions", postgresql_using="gin"),
        Index("idx_messages_created_at", "created_at"),
        Index("idx_messages_metadata", "metadata", postgresql_using="gin"),
        Index(
            "idx_messages_active",
            "room_id",
            text("created_at DESC"),
            postgresql_where=text("is_deleted = false AND room_id IS NOT NULL"),
        ),
        Index(
            "idx_messages_room_pagination",
            "room_id",
            text("id DESC"),
            postgresql_where=text("is_deleted = false"),
        ),
        Index(
            "idx_messages_conversation_pagination",
            "conversation_id",
            text("id DESC"),
            postgresql_where=text("is_deleted = false"),
        ),
        Index(
            "idx_messages_search",
            text("to_tsvector('french'::regconfig, content)"),
            postgresql_using="gin",
            postgresql_where=text("is_deleted = false"),
        ),
        # Search in each message's own language (migration 0015).
        Index("idx_messages_search_vector", "search_vector", postgresql_using="gin"),
        Index(
            "idx_messages_user_mentions",
            "author_id",
            text("created_at DESC"),
            postgresql_where=text("mentions IS NOT NULL AND array_length(mentions, 1) > 0"),
        ),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(Integer, autoincrement=True)
    uuid: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("direct_conversations.id", ondelete="CASCADE")
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    content_type: Mapped[MessageContentType] = mapped_column(
        pg_enum(MessageContentType, "message_content_type"), server_default="text"
    )
    raw_content: Mapped[str | None] = mapped_column(Text)
    parent_message_id: Mapped[int | None]
    parent_created_at: Mapped[datetime | None]
    thread_count: Mapped[int] = mapped_column(server_default=text("0"))
    is_thread_root: Mapped[bool] = mapped_column(server_default=text("false"))
    is_edited: Mapped[bool] = mapped_column(server_default=text("false"))
    edit_count: Mapped[int] = mapped_column(server_default=text("0"))
    is_deleted: Mapped[bool] = mapped_column(server_default=text("false"))
    is_pinned: Mapped[bool] = mapped_column(server_default=text("false"))
    mentions: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=text("'{}'::integer[]")
    )
    referenced_message_ids: Mapped[list[int]] = mapped_column(
        ARRAY(Integer), server_default=text("'{}'::integer[]")
    )
    reaction_count: Mapped[int] = mapped_column(server_default=text("0"))
    is_flagged: Mapped[bool] = mapped_column(server_default=text("false"))
    flag_count: Mapped[int] = mapped_column(server_default=text("0"))
    moderation_status: Mapped[ModerationStatus] = mapped_column(
        pg_enum(ModerationStatus, "moderation_status"), server_default="approved"
    )
    moderated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    moderation_reason: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=text("'{}'::jsonb"))
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(server_default=NOW)
    edited_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    # The enrichment (migration 0014, veza/messages/enrichment.py).
    rendered_html: Mapped[str | None] = mapped_column(Text)
    enriched_at: Mapped[datetime | None]
    # Search in the detected language (migration 0015, veza/messages/search.py).
    search_config: Mapped[str | None] = mapped_column(REGCONFIG)
    search_vector: Mapped[str | None] = mapped_column(TSVECTOR)


class MessageMention(Base):
    __tablename__ = "message_mentions"
    __table_args__ = (
        PrimaryKeyConstraint(
            "message_id", "message_created_at", "user_id", name="message_mentions_pkey"
        ),
        message_reference("message_mentions_message_fkey", "message_id", "message_created_at"),
        Index("idx_message_mentions_user", "user_id", text("message_created_at DESC")),
    )

    message_id: Mapped[int] = mapped_column(Integer, autoincrement=False)
    message_created_at: Mapped[datetime]
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), autoincrement=False
    )
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class Notification(Base):
    """What a message owes one person it concerns (migration 0016,
    veza/notifications/)."""

    __tablename__ = "notifications"
    __table_args__ = (
        message_reference("notifications_message_fkey", "message_id", "message_created_at"),
        UniqueConstraint("user_id", "message_id", name="notifications_user_message_key"),
        CheckConstraint(
            "(room_id IS NOT NULL AND conversation_id IS NULL)"
            " OR (room_id IS NULL AND conversation_id IS NOT NULL)",
            name="notification_location_check",
        ),
        Index("idx_notifications_user", "user_id", text("id DESC")),
        Index(
            "idx_notifications_unread",
            "user_id",
            text("id DESC"),
            postgresql_where=text("read_at IS NULL"),
        ),
        Index("idx_notifications_message", "message_id", "message_created_at"),
        Index(
            "idx_notifications_email_due",
            "created_at",
            postgresql_where=text("read_at IS NULL AND emailed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[NotificationKind] = mapped_column(pg_enum(NotificationKind, "notification_kind"))
    message_id: Mapped[int]
    message_created_at: Mapped[datetime]
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("direct_conversations.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    read_at: Mapped[datetime | None]
    emailed_at: Mapped[datetime | None]


class MessageReport(Base):
    """A user's report of a room message (migration 0017,
    veza/messages/moderation.py): one per reporter and message."""

    __tablename__ = "message_reports"
    __table_args__ = (
        message_reference("message_reports_message_fkey", "message_id", "message_created_at"),
        UniqueConstraint("message_id", "reporter_id", name="message_reports_message_reporter_key"),
        CheckConstraint(
            "length(reason) >= 1 AND length(reason) <= 1000", name="valid_report_reason"
        ),
        Index("idx_message_reports_message", "message_id", "message_created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int]
    message_created_at: Mapped[datetime]
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    reporter_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class Reaction(Base):
    __tablename__ = "reactions"
    __table_args__ = (
        message_reference("reactions_message_fkey", "message_id", "message_created_at"),
        UniqueConstraint(
            "message_id", "user_id", "emoji", name="reactions_message_id_user_id_emoji_key"
        ),
        CheckConstraint("length(emoji) >= 1 AND length(emoji) <= 20", name="valid_emoji"),
        Index("idx_reactions_message", "message_id", "message_created_at"),
        Index("idx_reactions_user", "user_id"),
        Index("idx_reactions_emoji", "emoji"),
        Index("idx_reactions_created_at", "created_at"),
        Index("idx_reactions_message_emoji", "message_id", "emoji"),
        Index("idx_reactions_user_history", "user_id", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int]
    message_created_at: Mapped[datetime]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    emoji: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (
        message_reference("files_message_fkey", "message_id", "message_created_at"),
        CheckConstraint("length(filename) > 0 AND length(filename) <= 255", name="valid_filename"),
        CheckConstraint("file_size > 0 AND file_size <= 104857600", name="valid_file_size"),
        CheckConstraint("file_hash IS NULL OR length(file_hash) = 64", name="valid_hash"),
        CheckConstraint(
            "(message_id IS NULL) = (message_created_at IS NULL)", name="valid_message_ref"
        ),
        # 0018: in a room or in a DM, never both.
        CheckConstraint("room_id IS NULL OR conversation_id IS NULL", name="files_location_check"),
        Index("idx_files_uploader", "uploaded_by"),
        # The upload quotas' rolling windows (api/quotas.py; migration 0007).
        Index("idx_files_uploader_created", "uploaded_by", "created_at"),
        Index("idx_files_room", "room_id", postgresql_where=text("room_id IS NOT NULL")),
        Index(
            "idx_files_conversation",
            "conversation_id",
            postgresql_where=text("conversation_id IS NOT NULL"),
        ),
        Index(
            "idx_files_message",
            "message_id",
            "message_created_at",
            postgresql_where=text("message_id IS NOT NULL"),
        ),
        Index("idx_files_hash", "file_hash"),
        Index("idx_files_mime_type", "mime_type"),
        Index("idx_files_created_at", "created_at"),
        Index(
            "idx_files_expires_at", "expires_at", postgresql_where=text("expires_at IS NOT NULL")
        ),
        Index("idx_files_virus_scan", "virus_scan_status"),
        # The exporter's counts by terminal state (veza/files/states.py; migration 0011).
        Index(
            "idx_files_failed",
            "virus_scan_status",
            postgresql_where=text("processing_status = 'failed'::file_processing_status"),
        ),
        Index(
            "idx_files_processing",
            "processing_status",
            postgresql_where=text(
                "processing_status = ANY (ARRAY['pending'::file_processing_status, "
                "'processing'::file_processing_status])"
            ),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = uuid_column()
    filename: Mapped[str] = mapped_column(String(255))
    original_filename: Mapped[str] = mapped_column(String(255))
    file_path: Mapped[str] = mapped_column(String(500))
    file_size: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(String(100), server_default="application/octet-stream")
    file_hash: Mapped[str | None] = mapped_column(String(64))
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    message_id: Mapped[int | None]
    message_created_at: Mapped[datetime | None]
    is_processed: Mapped[bool] = mapped_column(server_default=text("false"))
    thumbnail_path: Mapped[str | None] = mapped_column(String(500))
    processing_status: Mapped[FileProcessingStatus] = mapped_column(
        pg_enum(FileProcessingStatus, "file_processing_status"), server_default="pending"
    )
    virus_scan_status: Mapped[VirusScanStatus] = mapped_column(
        pg_enum(VirusScanStatus, "virus_scan_status"), server_default="pending"
    )
    virus_scan_result: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", server_default=text("'{}'::jsonb"))
    download_count: Mapped[int] = mapped_column(server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    expires_at: Mapped[datetime | None]
    # 0018: the DM the file was uploaded to (room_id's twin for DMs).
    conversation_id: Mapped[int | None] = mapped_column(
        ForeignKey("direct_conversations.id", ondelete="CASCADE")
    )


class DataExport(Base):
    """A user's data export (migration 0020, veza/accounts/export.py)."""

    __tablename__ = "data_exports"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed', 'expired')",
            name="valid_export_status",
        ),
        Index("idx_data_exports_user", "user_id", text("id DESC")),
        Index(
            "idx_data_exports_in_flight",
            "user_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
        Index("idx_data_exports_expiry", "expires_at", postgresql_where=text("status = 'done'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    storage_path: Mapped[str | None] = mapped_column(String(500))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    phase: Mapped[str | None] = mapped_column(String(50))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class AuditLog(Base):
    __tablename__ = "audit_logs"
    __table_args__ = (
        PrimaryKeyConstraint("id", "created_at", name="audit_logs_pkey"),
        CheckConstraint("length(event_type) > 0", name="valid_event_type"),
        Index("idx_audit_logs_event_type", "event_type"),
        Index("idx_audit_logs_user", "user_id", postgresql_where=text("user_id IS NOT NULL")),
        Index("idx_audit_logs_resource", "resource_type", "resource_id"),
        Index("idx_audit_logs_room", "room_id", postgresql_where=text("room_id IS NOT NULL")),
        Index("idx_audit_logs_created_at", "created_at"),
        Index("idx_audit_logs_severity", "severity"),
        Index("idx_audit_logs_ip", "ip_address", postgresql_where=text("ip_address IS NOT NULL")),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    id: Mapped[int] = mapped_column(BigInteger, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(50))
    event_data: Mapped[dict[str, Any]]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    resource_type: Mapped[str | None] = mapped_column(String(50))
    resource_id: Mapped[int | None]
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="SET NULL"))
    request_id: Mapped[uuid.UUID | None]
    session_id: Mapped[uuid.UUID | None]
    severity: Mapped[AuditSeverity] = mapped_column(
        pg_enum(AuditSeverity, "audit_severity"), server_default="info"
    )
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)


class UserSession(Base):
    __tablename__ = "user_sessions"
    __table_args__ = (
        CheckConstraint("expires_at > created_at", name="valid_expires_at"),
        Index("idx_user_sessions_user", "user_id"),
        Index("idx_user_sessions_token_hash", "token_hash", unique=True),
        Index(
            "idx_user_sessions_active",
            "user_id",
            "is_active",
            postgresql_where=text("is_active = true"),
        ),
        Index("idx_user_sessions_expires_at", "expires_at"),
        Index("idx_user_sessions_last_activity", "last_activity_at"),
        # 0004: refresh and logout close a session by its access token's jti.
        Index(
            "idx_user_sessions_access_token_jti",
            "access_token_jti",
            postgresql_where=text("access_token_jti IS NOT NULL"),
        ),
        # 0009: a reused refresh token or a revocation closes a family.
        Index("idx_user_sessions_family", "family_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64))
    access_token_jti: Mapped[uuid.UUID | None]
    ip_address: Mapped[str | None] = mapped_column(INET)
    user_agent: Mapped[str | None] = mapped_column(Text)
    device_info: Mapped[dict[str, Any] | None]
    location_info: Mapped[dict[str, Any] | None]
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    last_activity_at: Mapped[datetime] = mapped_column(server_default=NOW)
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
    expires_at: Mapped[datetime]
    # 0009: the login this session descends from (refreshes keep both), for
    # family revocation and the absolute lifetime.
    family_id: Mapped[uuid.UUID] = mapped_column(server_default=text("gen_random_uuid()"))
    authenticated_at: Mapped[datetime] = mapped_column(server_default=NOW)


class Outbox(Base):
    """Work a committed write owes: published to Celery by the relay."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("idx_outbox_unsent", "created_at", postgresql_where=text("sent_at IS NULL")),
        Index("idx_outbox_unfinished", "sent_at", postgresql_where=text("finished_at IS NULL")),
        Index(
            "idx_outbox_finished_at",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    task_name: Mapped[str] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    kwargs: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    queue: Mapped[str | None] = mapped_column(String(50))
    request_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    sent_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    publish_attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Migration 0006 (veza/outbox.py has the row's life).
    finished_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]
    redrives: Mapped[int] = mapped_column(server_default=text("0"))
    dead_at: Mapped[datetime | None]
    dead_reason: Mapped[str | None] = mapped_column(Text)


class MaintenanceRun(Base):
    """One run of a maintenance task: when, what it counted, how it ended."""

    __tablename__ = "maintenance_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'skipped', 'dry_run', 'cancelled')",
            name="valid_run_status",
        ),
        Index("idx_maintenance_runs_task", "task_name", text("started_at DESC")),
        Index("idx_maintenance_runs_status", "status", "task_name", text("finished_at DESC")),
        # The runs that sent work again (veza/maintenance/outcomes.py; migration 0011).
        Index(
            "idx_maintenance_runs_redrives",
            "task_name",
            postgresql_where=text("(NOT dry_run) AND (maintenance_redrives(counts) > 0)"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(155))
    dry_run: Mapped[bool] = mapped_column(server_default=text("false"))
    status: Mapped[str] = mapped_column(String(20), server_default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    finished_at: Mapped[datetime | None]
    # Live progress, written by the running run (veza/maintenance/run.py).
    phase: Mapped[str | None] = mapped_column(String(100))
    progress: Mapped[dict[str, Any] | None]
    progress_at: Mapped[datetime | None]
    cancel_requested_at: Mapped[datetime | None]
    cancel_requested_by: Mapped[str | None] = mapped_column(String(200))


# ------------------------------------------------------------ maintenance
# The retention archive (migration 0003): each archive table has the live
# table's columns (CREATE TABLE ... LIKE), plus archived_at, and no defaults
# or foreign keys. Built from the live tables' columns so the two cannot
# drift apart in this file.


def archive_table(
    live: type[Base], name: str, primary_key: tuple[str, ...], *indexes: tuple[str, tuple[str, ...]]
) -> Table:
    columns = [Column(c.name, c.type, nullable=c.nullable) for c in live.__table__.columns]
    return Table(
        name,
        Base.metadata,
        *columns,
        Column("archived_at", TZDateTime, nullable=False, server_default=NOW),
        PrimaryKeyConstraint(*primary_key, name=f"{name}_pkey"),
        *(Index(index_name, *cols) for index_name, cols in indexes),
    )


archived_messages = archive_table(
    Message,
    "archived_messages",
    ("id", "created_at"),
    ("idx_archived_messages_room", ("room_id", "created_at", "id")),
    ("idx_archived_messages_archived_at", ("archived_at",)),
)
archived_reactions = archive_table(
    Reaction,
    "archived_reactions",
    ("id",),
    ("idx_archived_reactions_message", ("message_id", "message_created_at")),
    ("idx_archived_reactions_archived_at", ("archived_at",)),
)
archived_files = archive_table(
    File,
    "archived_files",
    ("id",),
    ("idx_archived_files_message", ("message_id", "message_created_at")),
    ("idx_archived_files_hash", ("file_hash",)),
    ("idx_archived_files_archived_at", ("archived_at",)),
)


class ArchivedReplyLink(Base):
    """A reply that outlived its archived parent: detached, link kept here."""

    __tablename__ = "archived_reply_links"
    __table_args__ = (
        PrimaryKeyConstraint("message_id", "message_created_at", name="archived_reply_links_pkey"),
        Index("idx_archived_reply_links_parent", "parent_message_id", "parent_created_at"),
        Index("idx_archived_reply_links_archived_at", "archived_at"),
    )

    message_id: Mapped[int]
    message_created_at: Mapped[datetime]
    parent_message_id: Mapped[int]
    parent_created_at: Mapped[datetime]
    archived_at: Mapped[datetime] = mapped_column(server_default=NOW)


class RoomStatsRollup(Base):
    """room_stats' numbers, refreshed at a cost that follows what changed
    since the last refresh (refresh_room_stats_rollup(), migration 0023)."""

    __tablename__ = "room_stats_rollup"
    # The seed's room_stats indexes, behind the view of that name (migration 0012).
    __table_args__ = (
        Index("idx_room_stats_rollup_messages_24h", text("messages_24h DESC")),
        Index("idx_room_stats_rollup_active_users", text("active_users_24h DESC")),
    )

    room_id: Mapped[int] = mapped_column(
        ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    name: Mapped[str] = mapped_column(String(100))
    member_count: Mapped[int]
    total_messages: Mapped[int] = mapped_column(BigInteger)
    messages_24h: Mapped[int] = mapped_column(BigInteger)
    messages_7d: Mapped[int] = mapped_column(BigInteger)
    active_users_24h: Mapped[int] = mapped_column(BigInteger)
    last_message_at: Mapped[datetime | None]
    reactions_24h: Mapped[int] = mapped_column(BigInteger)
    refreshed_at: Mapped[datetime] = mapped_column(server_default=NOW)


# What changed since the last room_stats refresh, written by statement
# triggers and consumed by refresh_room_stats_rollup() (migration 0023).
# Append-only with no key: a chat post pays one heap row.
room_stats_deltas = Table(
    "room_stats_deltas",
    Base.metadata,
    Column("room_id", Integer),
    Column("user_id", Integer),
    Column("created_at", TZDateTime),
    Column("kind", CHAR(1), nullable=False),
    Column("delta", SmallInteger, nullable=False),
    Column("message_id", Integer),
    Column("message_created_at", TZDateTime),
    CheckConstraint("kind IN ('m', 'r', 'o', 'x')", name="valid_room_stats_delta_kind"),
)


class RoomStatsWindow(Base):
    """Per room and user, what the 24 h windows hold (messages by author,
    reactions by user) and per room the 7-day message count: the distinct
    counts of room_stats stay exact under deltas (migration 0023)."""

    __tablename__ = "room_stats_windows"
    __table_args__ = (
        CheckConstraint("kind IN ('d', 'r', 'w')", name="valid_room_stats_window_kind"),
        CheckConstraint("n > 0", name="valid_room_stats_window_count"),
    )

    room_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(CHAR(1), primary_key=True)
    user_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    n: Mapped[int]


class RoomStatsRefresh(Base):
    """The now() of the last room_stats refresh; no row: rebuild next."""

    __tablename__ = "room_stats_refresh"
    __table_args__ = (CheckConstraint("singleton", name="room_stats_refresh_singleton"),)

    singleton: Mapped[bool] = mapped_column(primary_key=True, server_default=text("true"))
    refreshed_now: Mapped[datetime]


class ImageBlocklistEntry(Base):
    """An image on the moderation blocklist, by its PDQ hash (migration
    0021, veza/files/blocklist.py)."""

    __tablename__ = "image_blocklist"

    id: Mapped[int] = mapped_column(primary_key=True)
    pdq: Mapped[str] = mapped_column(BIT(256), unique=True)
    label: Mapped[str | None] = mapped_column(String(200))
    added_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW)
