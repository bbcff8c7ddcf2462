"""Media renditions beyond still images (issue 16)."""
