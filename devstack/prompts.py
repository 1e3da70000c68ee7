"""Real prompts for demos, tests and benchmarks: PartiPrompts (Google Research, Apache-2.0)."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

PARTI_PROMPTS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "parti_prompts.tsv"


@lru_cache(maxsize=1)
def parti_prompts() -> list[str]:
    """Every prompt of ``../shared/data/parti_prompts.tsv`` (column ``Prompt``), in file order."""
    with PARTI_PROMPTS.open(encoding="utf-8", newline="") as f:
        return [row["Prompt"].strip() for row in csv.DictReader(f, delimiter="\t") if row["Prompt"].strip()]


def first(n: int) -> list[str]:
    """The first ``n`` prompts."""
    return parti_prompts()[:n]


def non_ascii(n: int) -> list[str]:
    """Up to ``n`` prompts containing non-ASCII characters (e.g. "Dalí", typographic quotes)."""
    return [p for p in parti_prompts() if not p.isascii()][:n]
