"""Who may see a message, as SQL over alias `m` (a row of messages) and the
parameter `:viewer`: one definition for every list that must show a user
only what they may still see (the mention feed, the messages an author may
link to).

A message is visible when it is in one of the viewer's DMs, or in a room
that is public or has the viewer as a member, and within that room's
retention (older messages are hidden before maintenance purges them).
Deleted messages are the caller's to leave out.
"""

VISIBLE_TO_VIEWER = """(
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
               OR m.created_at >= now() - make_interval(days => r.message_retention_days))))"""
