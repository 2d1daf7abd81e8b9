import types

import workhorse as wh


def test_all_is_complete_and_sorted():
    public = {
        name for name, value in vars(wh).items()
        if not name.startswith("_") and not (
            isinstance(value, types.ModuleType) and name != "middleware"
        )
    }
    assert public == set(wh.__all__)
    assert wh.__all__ == sorted(wh.__all__)
