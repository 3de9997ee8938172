"""Help text of the ``workbench`` command lines: every option's default shown once, no reST markup.

The parsers of ``workbench``, its train jobs and its benchmarks use :class:`HelpFormatter`; their descriptions
are often a module docstring's first paragraph, written in reST, which :func:`plain` turns into plain text.
"""
from __future__ import annotations

import argparse
import re

_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")  # :func:`x`, :py:class:`~a.b.C`
_LITERAL = re.compile(r"``([^`]+)``")
_INTERPRETED = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")
_STATES_DEFAULT = re.compile(r"\(default\b|%\(default\)", re.IGNORECASE)


def plain(text: str) -> str:
    """``text`` without reST inline markup: ``x`` and `x` become x, :role:`a.b.c` becomes a.b.c (:role:`~a.b.c`
    becomes c)."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    text = _LITERAL.sub(r"\1", text)
    return _INTERPRETED.sub(r"\1", text)


def states_default(help_text: str | None) -> bool:
    """Whether a help text already says what its default is ("... (default: the full schedule)")."""
    return bool(help_text and _STATES_DEFAULT.search(help_text))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` that adds "(default: ...)" only to a help text that does not state its
    default already, and prints descriptions and help texts as plain text (:func:`plain`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if states_default(action.help):
            return action.help
        return super()._get_help_string(action)

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))
