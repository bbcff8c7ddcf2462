"""Stills of media other than images: video and PDF posters (issue 16)."""
