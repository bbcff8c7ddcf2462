"""Maintenance: the rules every run shares (run, batched), and the upkeep
that is not one domain's (partitions, sessions, room_stats, the outbox's
re-drive)."""
