"""Messages: the counters messages.index keeps (counters), retention with
its archive and restore (retention), and the full recount (recount)."""
