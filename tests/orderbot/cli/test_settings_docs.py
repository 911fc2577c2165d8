"""README's settings table and .env.example are what `orderbot settings` prints.

Both are rendered from the settings model; edited by hand, or left behind when a
setting changed, they would tell operators something the code does not do.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from orderbot.cli import settings_docs
from orderbot.config.settings import Settings

REPO = Path(__file__).resolve().parents[3]
REGENERATE = "out of date: run `make settings-docs` and commit the result"


def printed(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "orderbot.cli.main", "settings", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
    )
    return done.stdout


def test_readme_settings_table_is_what_the_command_prints() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = settings_docs.marked_table(readme)
    assert table is not None, "README.md lost its <!-- settings:begin/end --> markers"
    assert table == printed("--markdown"), f"README.md's settings table is {REGENERATE}"


def test_env_example_is_what_the_command_prints() -> None:
    env_example = (REPO / ".env.example").read_text(encoding="utf-8")
    assert env_example == printed("--env-example"), f".env.example is {REGENERATE}"


def test_every_setting_has_a_row_in_the_table() -> None:
    table = settings_docs.markdown_table()
    assert [name for name in Settings.model_fields if f"| `{name.upper()}` |" not in table] == []


class _Example(BaseSettings):
    first: int = Field(default=5, description="a number", json_schema_extra={"group": "One"})
    token: SecretStr = Field(default=SecretStr("hunter22"), description="a secret")
    later: str | None = Field(
        default=None, description="a | b", json_schema_extra={"group": "Two"}, examples=["x"]
    )


def test_a_secret_shows_no_default() -> None:
    assert "| `TOKEN` | secret | a secret |" in settings_docs.markdown_table(_Example)
    assert "hunter22" not in settings_docs.env_example(_Example)


def test_a_field_belongs_to_the_group_last_started() -> None:
    groups = [(s.name, s.group) for s in settings_docs.settings_of(_Example)]
    assert groups == [("FIRST", "One"), ("TOKEN", "One"), ("LATER", "Two")]


def test_a_setting_without_a_description_is_refused() -> None:
    class Undocumented(BaseSettings):
        bare: int = Field(default=1, json_schema_extra={"group": "One"})

    with pytest.raises(ValueError, match="BARE has no description"):
        list(settings_docs.settings_of(Undocumented))


def test_env_example_comments_out_what_development_does_not_need() -> None:
    lines = settings_docs.env_example(_Example).splitlines()
    assert "# FIRST=5" in lines
    assert "# LATER=x" in lines


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.25, "250ms"), (5, "5s"), (75, "75s"), (300, "5m"), (86400, "1d"), (7200, "2h")],
)
def test_durations_are_written_with_their_largest_whole_unit(seconds: float, written: str) -> None:
    assert settings_docs.render_duration(timedelta(seconds=seconds)) == written


def test_into_replaces_only_the_lines_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# title\n<!-- settings:begin -->\nold table\n<!-- settings:end -->\nrest\n",
        encoding="utf-8",
    )
    subprocess.run(
        [sys.executable, "-m", "orderbot.cli.main", "settings", "--markdown", "--into", readme],
        check=True,
        timeout=60,
    )
    text = readme.read_text(encoding="utf-8")
    assert text == (
        f"# title\n<!-- settings:begin -->\n{settings_docs.markdown_table()}"
        "<!-- settings:end -->\nrest\n"
    )


def test_into_a_file_without_markers_fails_and_leaves_it_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "orderbot.cli.main", "settings", "--markdown", "--into", readme],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, readme.read_text(encoding="utf-8")) == (1, "# no markers\n")
    assert "settings:begin" in done.stderr
