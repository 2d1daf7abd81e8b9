from pathlib import Path

import workhorse as wh

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_reference_names_every_public_name():
    text = REFERENCE.read_text()
    missing = [name for name in wh.__all__ if f"`{name}" not in text]
    assert missing == []
