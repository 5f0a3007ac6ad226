"""Untrusted text (file names, paths, error messages, metadata) made safe to print on a rich console. Every layer
may import it: it needs rich's markup escaping and nothing of gmdf."""

from __future__ import annotations

from rich.markup import escape


def plain(text: str) -> str:
    """Untrusted text (a file name, a path, an error message) for the terminal: control characters (escape codes
    that could recolour or rewrite what the screen shows) made visible as ``\\xNN``, then rich markup escaped."""
    shown = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)
    return escape(shown)
