"""Course-format data: ``info.csv`` + ``poster/<id>.jpg`` + optional ``train.txt``.

The movie set is every id that has both a row in info.csv and a poster file,
sorted by id ascending; ``train.txt`` lines are 0-based positions into that
sorted list. Every validation error names the file, the row or line, and a fix.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["DataError", "MovieSet", "load_movielens", "read_train_positions"]

REQUIRED_COLUMNS = ("id", "name", "genre", "intro")


class DataError(ValueError):
    """Invalid input data; the message names the file and the problem."""


@dataclass
class MovieSet:
    """Movies with a poster, sorted by id. Index ``i`` is poster ``i`` and intro ``i``."""

    root: Path
    ids: np.ndarray  # [N] int64 movie ids, ascending
    titles: list[str]
    genres: list[list[str]]
    intros: list[str]
    poster_paths: list[Path]
    train_idx: np.ndarray  # positions of the training pairs (may be empty)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def heldout_idx(self) -> np.ndarray:
        """Positions not in train.txt (all positions when there is no train.txt)."""
        mask = np.ones(len(self), dtype=bool)
        mask[self.train_idx] = False
        return np.nonzero(mask)[0]

    @property
    def is_train(self) -> np.ndarray:
        mask = np.zeros(len(self), dtype=bool)
        mask[self.train_idx] = True
        return mask

    def subset(self, idx) -> MovieSet:
        """A new MovieSet of the given positions (in that order); train flags follow."""
        idx = np.asarray(idx, dtype=np.int64)
        where = np.full(len(self), -1)
        where[idx] = np.arange(len(idx))
        train = np.sort(where[self.train_idx][where[self.train_idx] >= 0])
        return MovieSet(
            root=self.root,
            ids=self.ids[idx],
            titles=[self.titles[i] for i in idx],
            genres=[self.genres[i] for i in idx],
            intros=[self.intros[i] for i in idx],
            poster_paths=[self.poster_paths[i] for i in idx],
            train_idx=train,
        )

    def poster_hashes(self) -> list[str]:
        """Content hash of every poster file (the feature cache's item key)."""
        return [hashlib.sha1(p.read_bytes()).hexdigest() for p in self.poster_paths]


def read_train_positions(path: Path, n: int) -> np.ndarray:
    """Parse train.txt: one integer position in [0, n) per line, no duplicates.

    Trailing blank lines are allowed; a blank line between positions is an error.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is fine, as in info.csv
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); save it as plain UTF-8") from e
    while lines and not lines[-1].strip():
        lines.pop()
    positions, seen = [], {}
    for lineno, line in enumerate(lines, start=1):
        s = line.strip()
        if not s:
            raise DataError(f"{path}:{lineno}: blank line; remove it")
        try:
            p = int(s)
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: {s!r} is not an integer position; each line must "
                f"be a 0-based position into the id-sorted list of {n} movies"
            ) from None
        if not 0 <= p < n:
            raise DataError(
                f"{path}:{lineno}: position {p} out of range [0, {n}); train.txt holds "
                "positions into the id-sorted movie list, not movie ids"
            )
        if p in seen:
            raise DataError(f"{path}:{lineno}: position {p} duplicates line {seen[p]}; remove one")
        seen[p] = lineno
        positions.append(p)
    return np.array(sorted(positions), dtype=np.int64)


def _read_info(path: Path) -> dict[int, dict]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read info.csv ({e})") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # Report the row of the first bad byte.
        row = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {row} is not valid UTF-8 ({e.reason}); re-save the file as UTF-8"
        ) from e
    # Records are split by the csv module's own rules (newline=''), so a field holding a
    # form feed, U+0085 or U+2028 (which csv.writer leaves unquoted) stays one field.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; the header must contain "
            f"{list(REQUIRED_COLUMNS)} (found {reader.fieldnames})"
        )
    rows: dict[int, dict] = {}
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long intro is legitimate
    try:
        records = list(enumerate(reader, start=2))
    except csv.Error as e:
        raise DataError(
            f"{path}: line {reader.line_num}: {e}; fix the quoting of that record"
        ) from None
    finally:
        csv.field_size_limit(limit)
    for rowno, row in records:
        try:
            movie_id = int(str(row["id"]).strip())
        except (TypeError, ValueError):
            raise DataError(f"{path}: row {rowno}: id {row['id']!r} is not an integer") from None
        if not 0 <= movie_id < 2**63:
            raise DataError(
                f"{path}: row {rowno}: id {movie_id} is outside [0, 2^63); ids are non-negative 64-bit integers"
            )
        if movie_id in rows:
            raise DataError(
                f"{path}: row {rowno}: duplicate id {movie_id} (first at row "
                f"{rows[movie_id]['_row']}); ids must be unique"
            )
        row["_row"] = rowno
        rows[movie_id] = row
    return rows


def load_movielens(root: str | Path) -> MovieSet:
    """Load a course-format folder: ``info.csv``, ``poster/`` and optionally ``train.txt``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder not found; pass --data pointing to a course-format folder"
        )
    info_path, poster_dir = root / "info.csv", root / "poster"
    if not info_path.is_file():
        raise DataError(f"{info_path}: missing; the data folder needs info.csv")
    if not poster_dir.is_dir():
        raise DataError(f"{poster_dir}: missing; the data folder needs a poster/ folder")
    info = _read_info(info_path)

    posters: dict[int, Path] = {}
    for p in poster_dir.iterdir():
        if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        if not p.stem.isdigit():
            if p.stem.lstrip("-").isdigit():
                raise DataError(
                    f"{p}: poster name is a negative id; ids are non-negative integers, rename it"
                )
            continue
        if not p.is_file():
            raise DataError(
                f"{p}: not a readable file (a directory or a dangling symlink); "
                "replace it with the poster image or remove it"
            )
        if int(p.stem) in posters:
            raise DataError(f"{p}: a second poster for id {p.stem}; keep one file per id")
        posters[int(p.stem)] = p
    ids = sorted(set(info) & set(posters))
    if not ids:
        raise DataError(f"{root}: no movie has both an info.csv row and a poster/<id>.jpg")

    titles, genres, intros, paths = [], [], [], []
    for movie_id in ids:
        row, path = info[movie_id], posters[movie_id]
        intro = (row.get("intro") or "").strip()
        if not intro or intro.lower() == "nan":
            raise DataError(
                f"{info_path}: row {row['_row']} (id {movie_id}): empty intro; every "
                "movie with a poster needs a plot intro"
            )
        if path.stat().st_size == 0:
            raise DataError(f"{path}: poster file is empty (0 bytes); replace or remove it")
        titles.append((row.get("name") or "").strip())
        genres.append(
            [g for g in (row.get("genre") or "").split("|") if g and g != "(no genres listed)"]
        )
        intros.append(intro)
        paths.append(path)

    train_path = root / "train.txt"
    train_idx = (
        read_train_positions(train_path, len(ids))
        if train_path.exists()
        else np.zeros(0, dtype=np.int64)
    )
    return MovieSet(
        root=root,
        ids=np.array(ids, dtype=np.int64),
        titles=titles,
        genres=genres,
        intros=intros,
        poster_paths=paths,
        train_idx=train_idx,
    )


def training_positions(
    ms: MovieSet, seed: int, fraction: float = 1.0
) -> tuple[np.ndarray, np.random.Generator]:
    """The train.txt positions a run trains on: all of them, or a seeded ``fraction``
    of them (learning curves). Returns them with the run's generator (seeded by
    ``seed``), which then draws the validation slice."""
    rng = np.random.default_rng(seed)
    pos = np.sort(ms.train_idx)
    if fraction < 1:
        keep = max(16, int(round(fraction * len(pos))))
        pos = np.sort(rng.choice(pos, keep, replace=False))
    return pos, rng


def load_image(path: Path | bytes) -> Image.Image:
    """Open a poster (a file, or its bytes as Ray workers receive them) as RGB
    (greyscale, CMYK, palette and PNG-in-.jpg all work)."""
    try:
        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
            im.load()
            return im.convert("RGB")
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        Image.DecompressionBombError,
        ValueError,
    ) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        name = "poster bytes" if isinstance(path, bytes) else path
        raise DataError(
            f"{name}: cannot decode poster image ({reason}); replace the file"
        ) from None
