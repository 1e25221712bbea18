"""The docs name files that exist, and the README stays short.

- Every ``src/ovseg/...`` path and every dotted module ``ovseg.x.y`` named in README.md's "Layout" section
  and anywhere in docs/architecture.md exists in the tree. A dotted name is a module (a ``.py`` file or a
  package folder), or a module followed by one name defined at its top level (``ovseg.inference.Segmenter``).
- README.md is under 1,000 words, counted as the whitespace-separated words of every line outside fenced
  code blocks (lines between a pair of lines that start with three backticks; the fences themselves are not
  counted). Headings, links, inline code and tables count.
- Every ``#anchor`` link in BENCHMARKS.md points at one of its own headings (GitHub's heading slugs).

Reads files only: nothing is imported, nothing is timed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_README_WORDS = 1000
PATH = re.compile(r"src/ovseg(?:/[\w.\-]+)*/?")
DOTTED = re.compile(r"(?<![\w./-])ovseg(?:\.[A-Za-z_]\w*)+")


def outside_code_blocks(text: str) -> list[str]:
    """The lines of ``text`` that are not inside a fenced code block (fence lines excluded)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def readme_words(text: str) -> int:
    return sum(len(line.split()) for line in outside_code_blocks(text))


def section(text: str, title: str) -> str:
    """From the ``## title`` heading to the next heading of level 1 or 2."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^#{{1,2}} |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def named_paths(text: str) -> set[str]:
    return {m.rstrip(".") for m in PATH.findall(text)}


def top_level_names(module: Path) -> set[str]:
    names = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def module_file(parts: list[str]) -> Path | None:
    base = SRC.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def dotted_exists(name: str) -> bool:
    parts = name.split(".")
    if module_file(parts):
        return True
    parent = module_file(parts[:-1])
    return parent is not None and parts[-1] in top_level_names(parent)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def docs_to_check() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return {"README.md (Layout)": section(readme, "Layout"),
            "docs/architecture.md": (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")}


def test_paths_named_in_the_layout_and_architecture_exist():
    missing = [f"{doc}: {path}" for doc, text in docs_to_check().items() for path in sorted(named_paths(text))
               if not (ROOT / path).exists()]
    assert not missing, "named but not in the tree:\n" + "\n".join(missing)


def test_dotted_modules_named_in_the_layout_and_architecture_exist():
    missing = [f"{doc}: {name}" for doc, text in docs_to_check().items()
               for name in sorted(set(DOTTED.findall(text))) if not dotted_exists(name)]
    assert not missing, "named but not in the tree:\n" + "\n".join(missing)


def test_the_layout_and_architecture_name_some_paths():
    for doc, text in docs_to_check().items():
        assert len(named_paths(text)) >= 8, f"{doc} names almost no src/ovseg paths: did its format change?"


def test_readme_is_under_a_thousand_words():
    words = readme_words((ROOT / "README.md").read_text(encoding="utf-8"))
    assert words < MAX_README_WORDS, f"README.md has {words} words outside code blocks (limit {MAX_README_WORDS})"


def test_word_count_skips_code_blocks():
    assert readme_words("one two\n```bash\nthree four five\n```\nsix") == 3


def test_benchmarks_anchor_links_resolve():
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    anchors = {slug(line.lstrip("#")) for line in outside_code_blocks(text) if re.match(r"#{1,6} ", line)}
    broken = sorted(set(re.findall(r"\]\(#([^)\s]+)\)", text)) - anchors)
    assert not broken, f"BENCHMARKS.md links to missing headings: {broken}"
