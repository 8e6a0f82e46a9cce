"""Screenshots of the portal's pages: each test run writes them to tests/e2e/artefacts/ (git-ignored, CI keeps
them); UPDATE_SCREENSHOTS=1 also refreshes the README's copies in docs/screenshots/ (reduced to 64 colours, so
they stay small)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
README_SCREENSHOTS = ROOT / "docs" / "screenshots"


def screenshot(page, name: str) -> Path:
    """`name` without extension, e.g. "portal-voices"."""
    ARTEFACTS.mkdir(exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        from PIL import Image

        README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").quantize(colors=64).save(README_SCREENSHOTS / f"{name}.png", optimize=True)
    return path
