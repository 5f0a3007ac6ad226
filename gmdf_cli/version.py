"""The package's version: its own module, so that any module can name it without importing the package's
``__init__`` (and, through its lazy ``Detector``, the model)."""

__version__ = "0.2.0"
