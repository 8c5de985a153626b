"""Naming output files after input files: the one rule every tool uses, so two inputs never share an output.

Rule: an output is named by the input's path relative to the input root, sub-folders kept, with the input's
extension folded into the name: `sub/portrait.jpg` → `sub/portrait_jpg<tag><suffix>` (`portrait.png` →
`portrait_png…`). Image extensions hold no `_`, so the mapping is one-to-one: `portrait.jpg` and `portrait.png`
give `portrait_jpg.jpg` and `portrait_png.jpg`, never one file.
"""

from __future__ import annotations

from pathlib import Path


def output_name(relative: str | Path, suffix: str, tag: str = "") -> Path:
    """The output path (relative, like `relative`) for the input file `relative` (a path relative to the input root).

    `suffix`: the output's extension with its dot (`.jpg`, `.txt`, or `""`); `tag`: text after the name
    (`_face1`). Example: `output_name("a/portrait.jpg", ".jpg", "_face1")` → `a/portrait_jpg_face1.jpg`.
    A name without extension is kept as is (`notes` → `notes<tag><suffix>`)."""
    relative = Path(relative)
    extension = relative.suffix[1:]
    base = f"{relative.stem}_{extension}" if extension else relative.name
    return relative.with_name(f"{base}{tag}{suffix}")
