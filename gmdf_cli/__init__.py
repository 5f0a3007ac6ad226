"""gmdf: tell whether the faces in a video or image are deepfakes (GM-DF, ACM MM 2025)."""

__version__ = "0.1.0"
