"""The texts' table: every text in every language, each translation taking the same
placeholders, so no language can lose the address or the order number."""

from string import Formatter

import pytest

from dialog import Lang
from dialog.texts import NOTICES, TEXTS, Msg, Notice


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(template) if name is not None}


@pytest.mark.parametrize("key", [*Msg, *Notice])
def test_every_text_has_every_language_with_the_same_placeholders(key: Msg | Notice) -> None:
    table = TEXTS[key] if isinstance(key, Msg) else NOTICES[key]

    assert set(table) == set(Lang)
    assert all(table[lang].strip() for lang in Lang)
    assert len({frozenset(placeholders(table[lang])) for lang in Lang}) == 1
