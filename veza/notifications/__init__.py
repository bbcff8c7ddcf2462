"""Notifications: who a message concerns (fanout.py, after commit, from
messages.index), and the missed-message email of what they left unread
(missed_email.py, with its signed unsubscribe link: unsubscribe.py)."""
