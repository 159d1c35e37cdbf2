"""The docs hold together: the README is a short front page, every relative link resolves, and the
Python examples of the API pages run as written (on the embedded model)."""

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path):
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(2)) for m in re.finditer(r"^(#+)\s+(.*)$", text, re.M)}


def relative_links(page: Path):
    text = FENCE.sub("", page.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def broken_links(page: Path):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no such heading)")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert not broken_links(page)


def test_link_check_catches_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Some heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#some-heading) [bad](missing.md) [bad anchor](other.md#nope) "
                    "[web](https://example.org)\n```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["missing.md (no such file)", "other.md#nope (no such heading)"]


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    commands = [b for lang, b in FENCE.findall("\n".join(lines[:30]) + "\n") if lang == "bash"]
    assert [c.split()[:2] for c in commands[:2]] == [["bash", "scripts/demo.sh"],
                                                     ["bash", "scripts/test.sh"]]
    assert {p.name for p in PAGES[1:]} <= {t.split("/")[-1].split("#")[0]
                                           for t in relative_links(PAGES[0])}


def python_blocks(name: str):
    return [code
            for lang, code in FENCE.findall((REPO / "docs" / name).read_text())
            if lang == "python"]


@pytest.mark.parametrize("name", ["python-api.md", "perception.md", "foxglove.md"])
def test_python_examples_run(name, tmp_path, monkeypatch):
    """The examples read ``frame.png``: a rendered sample stands in for a camera frame."""
    from ros_mm_perception.core.models.embedded import embedded_clip_dir

    shutil.copy(embedded_clip_dir().parent / "samples" / "shapes.png", tmp_path / "frame.png")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(name)
    assert blocks
    for code in blocks:
        namespace = {}
        exec(compile(code, f"{name} example", "exec"), namespace)
