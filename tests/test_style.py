"""Code-shape rules the redraw of issue 15 set: no copied blocks inside gmatch/, and no
function-level import of gmatch (a sign of an import cycle) outside the encoder loaders."""

import ast
import collections
from pathlib import Path

GMATCH = Path(__file__).resolve().parents[1] / "gmatch"
WINDOW = 6  # lines


def copied_blocks(root: Path, window: int = WINDOW) -> list[list[tuple[str, int]]]:
    """Places where the same ``window`` non-blank, non-comment lines (stripped) occur twice
    or more, as pylint's duplicate-code check counts them (import-only windows ignored)."""
    seen = collections.defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        lines = [(i, s.strip()) for i, s in enumerate(path.read_text().splitlines(), 1)]
        lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
        for k in range(len(lines) - window + 1):
            block = lines[k : k + window]
            if all(
                s.startswith(("from ", "import ", ")", "]", "}")) or len(s) < 4 for _, s in block
            ):
                continue
            seen["\n".join(s for _, s in block)].append((str(path.relative_to(root)), block[0][0]))
    return [places for places in seen.values() if len(places) > 1]


def test_no_copied_blocks_in_gmatch():
    assert copied_blocks(GMATCH) == []


def test_the_copy_check_catches_a_copy(tmp_path):
    body = "\n".join(f"    x{i} = compute({i}) + offset" for i in range(WINDOW))
    (tmp_path / "a.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "b.py").write_text(f"def g():\n    pass\n{body}\n")
    assert len(copied_blocks(tmp_path)) == 1


def function_level_gmatch_imports(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmatch"):
                    out.append(f"{path.relative_to(root)}:{node.lineno} {fn.name}")
    return out


def test_function_level_imports_of_gmatch_only_in_the_encoder_loaders():
    found = function_level_gmatch_imports(GMATCH)
    assert found and all(f.startswith("encoders/registry.py:") for f in found), found
