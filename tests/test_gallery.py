"""docs/lessons/ (the gallery scripts/make_gallery.py makes): every lesson has a figure, every
figure the index names exists and decodes, the README links the index, the folder stays small."""
from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
GALLERY = REPO / "docs" / "lessons"


def test_every_lesson_has_a_figure_that_decodes():
    index = (GALLERY / "README.md").read_text(encoding="utf-8")
    notebooks = sorted(p.name[:5] for p in (REPO / "notebooks").glob("6-2-*.ipynb"))
    for lesson in notebooks:
        assert f"## {lesson} " in index, f"no section for lesson {lesson}"
    names = re.findall(r"\]\(([^)]+\.(?:png|gif))\)", index)
    assert len(names) >= len(notebooks)
    for name in names:
        with Image.open(GALLERY / name) as im:
            im.load()
            assert im.size[0] >= 100 and im.size[1] >= 50, (name, im.size)
    on_disk = {p.name for p in GALLERY.iterdir() if p.suffix in (".png", ".gif")}
    assert on_disk == set(names), on_disk ^ set(names)


def test_gallery_is_small_and_linked_from_the_readme():
    total = sum(p.stat().st_size for p in GALLERY.iterdir())
    assert total < 1_000_000, f"docs/lessons holds {total / 1e6:.2f} MB"
    assert "docs/lessons/README.md" in (REPO / "README.md").read_text(encoding="utf-8")
