"""Email asset paths fixture: the two lines the seed points at the web UI."""

from pathlib import Path


def logo_paths():
    return [
        Path("web/icons/icon_left_brand.png"),
        Path("web/dist/assets/icons/icon_left_brand.png"),
    ]
