"""How much of a poster's title its OCR reading contains: a label-based measure of a
reader, for choosing between OCR models (benchmarks/OCR_QUALITY.md).

Titles are labels: choose a reader on the training movies only, report held-out beside.

The measure (issue 30): the title from info.csv ``name`` without the trailing year,
lowercased, split into words of letters, digits and apostrophes; words of >= 3 characters
that are not English stopwords count. A word is *found* when it occurs in the poster's
confident OCR text with every character that is not a letter, digit or apostrophe
removed (so "BROKENARROW" finds "broken" and "arrow"); a *whole-word match* needs it as
a separate word of the OCR text (spaces read right).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["title_words", "title_recall"]

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_WORD = re.compile(r"[a-z0-9']+")
_NOT_WORD = re.compile(r"[^a-z0-9']")


def _stopwords() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def title_words(name: str) -> list[str]:
    """The words of a title that the measure counts ("The Broken Arrow (1996)" ->
    ["broken", "arrow"])."""
    stop = _stopwords()
    words = _WORD.findall(_YEAR.sub("", name).lower())
    return [w for w in words if len(w) >= 3 and w not in stop]


def title_recall(lines: list[list], titles: list[str], min_confidence: float = 0.6) -> dict:
    """Reading quality of OCR ``lines`` (one ``[[text, confidence], ...]`` per poster)
    against the posters' ``titles``.

    Returns ``recall`` (share of title words found, over all counted words),
    ``all_found`` / ``none_found`` (share of posters whose counted title words are all /
    none found; posters without a counted word are left out), ``whole_words`` (share of
    title words matched as whole words) and ``posters`` (how many were counted).
    """
    if len(lines) != len(titles):
        raise ValueError(f"{len(lines)} readings for {len(titles)} titles")
    found = whole = total = 0
    all_found, none_found, posters = [], [], 0
    for read, title in zip(lines, titles):
        words = title_words(title)
        if not words:
            continue
        text = " ".join(t for t, score in read if score >= min_confidence).lower()
        flat = _NOT_WORD.sub("", text)
        tokens = set(_WORD.findall(text))
        hits = [w in flat for w in words]
        found += sum(hits)
        whole += sum(w in tokens for w in words)
        total += len(words)
        all_found.append(all(hits))
        none_found.append(not any(hits))
        posters += 1
    if not posters:
        raise ValueError("no poster has a title word to count")
    return {
        "recall": found / total,
        "all_found": float(np.mean(all_found)),
        "none_found": float(np.mean(none_found)),
        "whole_words": whole / total,
        "posters": posters,
    }
