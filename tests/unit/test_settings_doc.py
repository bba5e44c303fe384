"""Every setting is documented: the README's settings table is the one devtools/settings_doc renders from
herald.settings."""

from __future__ import annotations

from pathlib import Path

from herald.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented_and_the_readme_table_is_current() -> None:
    from devtools.settings_doc import DOCS, render

    assert [name for name in Settings.model_fields if name not in DOCS] == []
    assert [name for name in DOCS if name not in Settings.model_fields] == []
    assert render(README) == README, "run: python -m devtools.settings_doc README.md"
