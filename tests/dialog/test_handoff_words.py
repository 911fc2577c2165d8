"""HANDOFF_WORDS are read like the dialog's own words: any case, decorations dropped,
the whole short answer made of them."""

from __future__ import annotations

import pytest

from dialog import asks_for_person, person_words

WORDS = person_words(["Оператор", "operator", "человек", "менеджер"])


@pytest.mark.parametrize("text", ["оператор", "Оператор!", "OPERATOR 🙂", "человек, человек"])
def test_a_customer_asking_for_a_person_is_heard(text: str) -> None:
    assert asks_for_person(text, WORDS)


@pytest.mark.parametrize("text", ["ул. Человека 5", "операторы связи", "", "да"])
def test_a_message_that_only_mentions_a_word_is_no_request(text: str) -> None:
    assert not asks_for_person(text, WORDS)
