"""The account lifecycle: erasing deleted accounts (erasure.py)."""
