"""Generated blocks of the README: written from the results, and checked against them.

A block is the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``. :func:`replace_block`
writes it (``python -m iwshift.report --readme README.md``); :func:`check_block` tells in one line whether
the README still says what the results say (``--check README.md``, run by the test suite), so the README
cannot drift from its data.
"""

from __future__ import annotations

import difflib


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def find_block(text: str, name: str) -> str | None:
    """The lines between the block's markers (without them), or None when the text has no such block."""
    begin, end = markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return None
    return text[start + len(begin):stop].strip("\n")


def replace_block(text: str, name: str, block: str) -> str:
    """``text`` with the block's contents replaced by ``block``; a one-line ValueError without markers."""
    begin, end = markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"no '{begin}' ... '{end}' block to write into")
    return text[:start + len(begin)] + "\n" + block.strip("\n") + "\n" + text[stop:]


def check_block(text: str, name: str, block: str) -> str | None:
    """None when the text's block equals ``block``; else one line saying how they differ."""
    found = find_block(text, name)
    if found is None:
        begin, end = markers(name)
        return f"no '{begin}' ... '{end}' block"
    want, have = block.strip("\n").splitlines(), found.splitlines()
    if want == have:
        return None
    changed = [line for line in difflib.unified_diff(want, have, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    removed = sum(line.startswith("-") for line in changed)
    first = next((line for line in changed if line.startswith("+")), changed[0] if changed else "")
    return (f"{removed} of {len(want)} lines differ from the results; first README line that differs: "
            f"{first[1:][:160]!r}")
