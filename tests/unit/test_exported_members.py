"""The public programmatic API is exactly what workers.app exports (as httpx pins its own
in tests/test_exported_members.py): adding, renaming or dropping a name is a decision, made
here and in the README's API section together."""

import re
from pathlib import Path

import workers.app

README = Path(__file__).resolve().parents[2] / "README.md"


def test_all_exports_exist_and_nothing_public_is_left_out():
    exported = set(workers.app.__all__)
    public = {name for name in dir(workers.app) if not name.startswith("_")
              and not isinstance(getattr(workers.app, name), type(workers))}
    assert exported == public
    for name in exported:
        assert getattr(workers.app, name) is not None


def test_the_readme_api_section_lists_exactly_the_exports():
    section = README.read_text().split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", section, re.M))
    assert listed == set(workers.app.__all__)
