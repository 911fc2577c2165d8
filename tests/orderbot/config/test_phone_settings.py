"""The dialog's phone settings: regions, checked when the process starts."""

import pytest

from orderbot.config.settings import ConfigError, load_settings
from worker.service import dialog_rules


def test_the_default_region_is_kyrgyzstan_alone() -> None:
    rules = dialog_rules(load_settings(_env_file=None))

    assert (rules.phone.region, rules.phone.allowed) == ("KG", frozenset({"KG"}))


def test_allowed_regions_are_a_comma_separated_list_and_include_the_home_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHONE_REGION", "kz")
    monkeypatch.setenv("PHONE_REGIONS_ALLOWED", " kg, RU ,")

    rules = dialog_rules(load_settings(_env_file=None))

    assert (rules.phone.region, rules.phone.allowed) == ("KZ", frozenset({"KZ", "KG", "RU"}))


@pytest.mark.parametrize(
    ("name", "value"), [("PHONE_REGION", "XX"), ("PHONE_REGIONS_ALLOWED", "KG,ZZ")]
)
def test_an_unknown_region_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=f"{name}: .*unknown phone region"):
        load_settings(_env_file=None)


@pytest.mark.parametrize("code", ["996", "+996"])
def test_the_old_country_code_is_accepted_when_it_is_the_region_s_own(
    monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    monkeypatch.setenv("PHONE_COUNTRY_CODE", code)

    assert load_settings(_env_file=None).phone_region == "KG"


def test_an_old_country_code_of_another_country_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHONE_COUNTRY_CODE", "7")

    with pytest.raises(ConfigError, match="set PHONE_REGION"):
        load_settings(_env_file=None)
