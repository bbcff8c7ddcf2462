"""Who may see a message, as SQL over alias `m` (a row of messages) and the
parameter `:viewer`: one definition for every list that must show a user
only what they may still see (the mention feed, the messages an author may
link to).

A message is visible when it is in one of the viewer's DMs, or in a room
that is public or has the viewer as a member, and within that room's
retention (older messages are hidden before maintenance purges them).
Deleted messages are the caller's to leave out.

A message held for review (`pending`) or `rejected` (veza/messages/
moderation.py) is visible only to its author and its room's moderators:
the owner, admins, moderators and members with can_manage_messages (as
api/access.py's can_moderate_messages). MODERATION_VISIBLE says so alone,
for the message lists whose room is checked already (api/messages.py).
"""

# A message held or rejected by moderation.
HELD = "m.moderation_status IN ('pending', 'rejected')"

MODERATION_VISIBLE = f"""(
    NOT {HELD}
    OR m.author_id = :viewer
    OR EXISTS (
        SELECT 1 FROM rooms mr JOIN room_members mm ON mm.room_id = mr.id
        WHERE mr.id = m.room_id AND mm.user_id = :viewer
          AND (mr.owner_id = :viewer OR mm.role IN ('moderator', 'admin')
               OR mm.can_manage_messages)))"""

VISIBLE_TO_VIEWER = f"""((
    EXISTS (
        SELECT 1 FROM direct_conversation_participants p
        WHERE p.conversation_id = m.conversation_id AND p.user_id = :viewer)
    OR EXISTS (
        SELECT 1 FROM rooms r
        WHERE r.id = m.room_id
          AND (r.is_public OR EXISTS (
                SELECT 1 FROM room_members rm
                WHERE rm.room_id = r.id AND rm.user_id = :viewer))
          AND (r.message_retention_days <= 0
               OR m.created_at >= now() - make_interval(days => r.message_retention_days))))
    AND {MODERATION_VISIBLE})"""
