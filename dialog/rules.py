"""Limits of the dialog, kept apart from the code so deployments can change them."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PhoneRule:
    """A setting, not a constant: each market has its own country code and number length."""

    country_code: str = "996"
    national_digits: int = 9

    def __post_init__(self) -> None:
        if not (self.country_code.isascii() and self.country_code.isdigit()):
            raise ValueError(f"country_code must be digits, got {self.country_code!r}")
        if self.national_digits < 1:
            raise ValueError(f"national_digits must be positive, got {self.national_digits}")


@dataclass(frozen=True, slots=True)
class DialogRules:
    """Bounds checked on each answer; a misconfiguration fails at start-up, not mid-dialog."""

    phone: PhoneRule = PhoneRule()
    address_min: int = 5
    address_max: int = 200
    quantity_min: int = 1
    quantity_max: int = 50

    def __post_init__(self) -> None:
        if not 1 <= self.address_min <= self.address_max:
            raise ValueError(f"bad address bounds {self.address_min}..{self.address_max}")
        if not 1 <= self.quantity_min <= self.quantity_max:
            raise ValueError(f"bad quantity bounds {self.quantity_min}..{self.quantity_max}")
