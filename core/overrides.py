"""Quote a value (a file or folder name) for a Hydra command-line override, whatever characters it holds.

Hydra parses `key=value` with its own grammar (hydra/grammar/OverrideLexer.g4): unquoted, `=`, `,`, spaces,
brackets and parentheses end or split the value (`CKPT=.../epoch=0-step=1.ckpt` is a parse error). A single-quoted
value takes everything; inside it only backslashes before a quote or at the end are escapes, and OmegaConf then
resolves `${...}` in the string, whose escape is `\\${`. Stdlib only, so the Makefile runs it as a script:

    python core/overrides.py ckpt '/runs/epoch=0-step=1.ckpt'   # prints ckpt='/runs/epoch=0-step=1.ckpt'
"""

from __future__ import annotations

import re
import sys

# OmegaConf: `${` starts an interpolation; `\${` is a literal one, and backslashes before it escape each other.
_INTERPOLATION = re.compile(r"(\\*)\$\{")
# Hydra, in a single-quoted value: a run of backslashes before a quote, or at the end, escapes itself in pairs.
_BEFORE_QUOTE_OR_END = re.compile(r"(\\*)('|\Z)")


def quote(value: str) -> str:
    """`value` as a single-quoted Hydra override value that composes back to exactly `value` (a str).
    E.g. `quote("epoch=0-step=1.ckpt") == "'epoch=0-step=1.ckpt'"`, `quote("it's") == "'it\\\\'s'"`."""
    value = _INTERPOLATION.sub(lambda m: m[1] * 2 + "\\${", value)
    value = _BEFORE_QUOTE_OR_END.sub(lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
    return f"'{value}'"


def override(key: str, value: str) -> str:
    """The override `key='value'` (see `quote`)."""
    return f"{key}={quote(value)}"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python core/overrides.py KEY VALUE  (prints KEY='VALUE' quoted for Hydra)")
    print(override(sys.argv[1], sys.argv[2]))
