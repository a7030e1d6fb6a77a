"""A griffe extension for the API reference: the library's docstrings use a little
reStructuredText (``:class:`~x.Y```, ``Example::`` blocks); render them as Markdown.

- ``:role:`~pkg.mod.Name``` -> `` `Name` `` and ``:role:`pkg.mod.Name``` -> `` `pkg.mod.Name` ``;
- a paragraph ending in ``::`` -> ``:`` (the indented block after it is already a Markdown code block).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|const|py:\w+):`(~?)([^`]+)`")
LITERAL = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def markdown(text: str) -> str:
    return LITERAL.sub(r"\1:", ROLE.sub(_role, text))


class RSTRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
