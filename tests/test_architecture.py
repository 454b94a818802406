"""A training run goes down through the floors: traced with ``sys.setprofile``, no room
(module) of gmatch above the ground floor is entered through more than three distinct
functions from other rooms. The walk is written to ``walk.txt`` for reading."""

import collections
import sys
from pathlib import Path

from conftest import tiny

import gmatch
from gmatch.cli import main

PACKAGE = str(Path(gmatch.__file__).parent)
# The ground floor: data, configuration, I/O, text statistics, metrics, threads. Rooms
# above it call down into it from everywhere, as they should.
GROUND = {"data.py", "config.py", "io.py", "text.py", "metrics.py", "threads.py"}
LIMIT = 3


def _room(frame) -> str | None:
    name = frame.f_code.co_filename
    return name[len(PACKAGE) + 1 :] if name.startswith(PACKAGE) else None


def trace_walk(fn) -> list[tuple[str | None, str, str]]:
    """``(calling room, entered room, function)`` of every call from one gmatch room into
    another while ``fn()`` runs, each once, in the order first seen."""
    seen: dict = {}

    def profile(frame, event, arg):
        if event != "call" or (room := _room(frame)) is None:
            return
        back = frame.f_back
        while back is not None and _room(back) is None:
            back = back.f_back
        caller = _room(back) if back is not None else None
        if caller != room:
            seen.setdefault((caller, room, frame.f_code.co_name), None)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return list(seen)


def crowded_rooms(walk, ground=GROUND, limit=LIMIT) -> dict[str, list[str]]:
    """Rooms above the ground floor entered through more than ``limit`` functions."""
    entries = collections.defaultdict(set)
    for _, room, function in walk:
        entries[room].add(function)
    return {r: sorted(f) for r, f in entries.items() if r not in ground and len(f) > limit}


def test_a_training_run_enters_no_room_more_than_three_ways(tiny_dir, cache_dir, tmp_path):
    argv = ["train", "--data", str(tiny_dir), "--quiet"]
    overrides = [f"data.cache_dir={cache_dir}", *tiny({"model.n_layers": 1})]
    assert main([*argv, "--out", str(tmp_path / "warm"), *overrides]) == 0  # cached features
    walk = trace_walk(lambda: main([*argv, "--out", str(tmp_path / "run"), *overrides]))
    (tmp_path / "walk.txt").write_text("\n".join(map(str, walk)))
    rooms = {room for _, room, _ in walk}
    assert {"features/container.py", "training/loop.py", "models/matcher.py"} <= rooms
    assert crowded_rooms(walk) == {}


def test_the_room_check_catches_a_room_entered_four_ways():
    walk = [("a.py", "b.py", f"f{i}") for i in range(4)] + [
        ("a.py", "io.py", f"w{i}") for i in range(9)
    ]
    assert crowded_rooms(walk) == {"b.py": ["f0", "f1", "f2", "f3"]}
    assert crowded_rooms(walk[:3]) == {}
