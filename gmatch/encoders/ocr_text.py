"""The text of OCR lines: confident lines as lowercase word strings, joined into one
text, with runs read without spaces split into words."""

from __future__ import annotations

import re

__all__ = ["clean_ocr", "ocr_lines", "segment_words"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'&\-]*|\d+")


def segment_words(text: str, min_len: int = 7) -> str:
    """Split the runs RapidOCR reads without spaces into words
    ("grumpieroldmen" -> "grumpier old men") with wordninja's English unigram
    model; only alphabetic tokens of ``min_len`` or more characters are split, so
    names and short words stay as they are."""
    import wordninja

    out = []
    for token in text.split():
        if len(token) >= min_len and token.isalpha():
            out.extend(wordninja.split(token))
        else:
            out.append(token)
    return " ".join(out)


def ocr_lines(lines: list[list], min_confidence: float = 0.6, segment: bool = False) -> list[str]:
    """Confident OCR lines that contain a letter, as lowercase word strings
    (segmented with :func:`segment_words` when ``segment``)."""
    kept = []
    for text, score in lines:
        if score < min_confidence:
            continue
        words = _WORD.findall(text)
        if not any(w[0].isalpha() for w in words):
            continue
        line = " ".join(words).lower()
        kept.append(segment_words(line) if segment else line)
    return kept


def clean_ocr(lines: list[list], min_confidence: float = 0.6, segment: bool = False) -> str:
    """Join confident OCR lines into one lowercase text.

    Drops low-confidence fragments and lines without a letter; with ``segment``
    splits runs like ``CITYHALL`` into words (:func:`segment_words`).
    """
    return " ".join(ocr_lines(lines, min_confidence, segment))
