"""Code-shape rules: no copied blocks inside gmatch/; at most five function-level imports
of gmatch (a sign of an import cycle; only the encoder loaders, which defer heavy
libraries) across gmatch/, experiments/ and benchmarks/; no module importing another's
private name; no gmatch file over 450 lines, class over 120 lines, benchmarks file over
400 lines. Each rule's checker is shown to catch a violation."""

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GMATCH = ROOT / "gmatch"
TREES = [ROOT / "gmatch", ROOT / "experiments", ROOT / "benchmarks"]
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


def _gmatch_module(node) -> str | None:
    """The gmatch module an import statement names, or None."""
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmatch"):
        return node.module
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "gmatch"]
        return names[0] if names else None
    return None


def function_level_gmatch_imports(*roots: Path) -> list[str]:
    out = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if _gmatch_module(node):
                        out.append(f"{root.name}/{path.relative_to(root)}:{node.lineno} {fn.name}")
    return out


def test_function_level_imports_of_gmatch_only_in_the_encoder_loaders():
    found = function_level_gmatch_imports(*TREES)
    assert len(found) <= 5 and all(f.startswith("gmatch/encoders/registry.py:") for f in found), (
        found
    )


def test_the_function_level_import_check_catches_one(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    import gmatch.data\n    from gmatch import io\n")
    assert len(function_level_gmatch_imports(tmp_path)) == 2


def private_imports(*roots: Path) -> list[str]:
    """``from gmatch.x import _name`` anywhere in the trees (one module reaching into
    another's private parts)."""
    out = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gmatch"):
                    for a in node.names:
                        if a.name.startswith("_") and not a.name.startswith("__"):
                            out.append(f"{path.relative_to(root)}:{node.lineno} {a.name}")
    return out


def test_no_module_imports_a_private_name_of_another():
    assert private_imports(*TREES) == []


def test_the_private_import_check_catches_one(tmp_path):
    (tmp_path / "a.py").write_text("from gmatch.features.cache import _RUNNER, read_rows\n")
    assert private_imports(tmp_path) == ["a.py:1 _RUNNER"]


def oversized(root: Path, file_limit: int, class_limit: int | None = None) -> list[str]:
    """Files over ``file_limit`` lines and classes over ``class_limit`` lines."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > file_limit:
            out.append(f"{path.relative_to(root)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)) if class_limit else ():
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                if size > class_limit:
                    out.append(f"{path.relative_to(root)}:{node.name} {size} lines")
    return out


def test_no_file_or_class_outgrows_its_room():
    assert oversized(GMATCH, 450, 120) == []
    assert oversized(ROOT / "benchmarks", 400) == []


def test_the_size_check_catches_a_big_file_and_a_big_class(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(130))
    (tmp_path / "a.py").write_text(f"class Big:\n{body}\n")
    assert oversized(tmp_path, 450, 120) == ["a.py:Big 131 lines"]
    assert oversized(tmp_path, 100) == ["a.py: 131 lines"]
