"""A reply's retry story survives the trip through headers, and what is missing or
malformed in them counts as no story at all."""

from __future__ import annotations

from datetime import UTC, datetime

from orderbot.amqp.dead_letters import ATTEMPTS, FIRST_FAILURE, RETRIES, RetryStory


def test_a_story_reads_back_from_its_headers() -> None:
    story = RetryStory(
        attempts=4, retries=2, first_failure=datetime(2026, 1, 2, tzinfo=UTC), last_error="503"
    )

    assert RetryStory.from_headers(story.to_headers()) == story


def test_missing_or_malformed_headers_are_no_story() -> None:
    headers = {ATTEMPTS: "four", RETRIES: True, FIRST_FAILURE: "yesterday"}

    assert RetryStory.from_headers(headers) == RetryStory()
    assert RetryStory.from_headers(None) == RetryStory()


def test_a_failure_counts_an_attempt_and_a_retry_only_when_one_is_scheduled() -> None:
    story = RetryStory(attempts=1, retries=1, last_error="old")

    assert story.failed("new", retry=True) == RetryStory(2, 2, None, "new")
    assert story.failed("new", retry=False) == RetryStory(2, 1, None, "new")


def test_a_long_error_is_cut_in_the_headers() -> None:
    headers = RetryStory(last_error="x" * 5000).to_headers()

    assert len(str(headers["x-last-error"])) == 1000
