"""Settings fixture. It imports without Django so that a test can read BASE_DIR."""

from pathlib import Path

BASE_DIR = Path(__file__).absolute().parent.parent.parent
STATIC_ROOT = BASE_DIR / "static"
