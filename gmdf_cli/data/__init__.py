"""Inputs -> frames -> faces -> crops: media decoding, face detection, dataset layouts, caches, forgery synthesis."""

DETECTION_SIDE = 480
"""Longest side a video frame is shrunk to before face detection (the default of every command)."""
