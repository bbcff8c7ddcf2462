"""Renditions of uploads: stills, animations, video and PDF posters, placeholders."""
