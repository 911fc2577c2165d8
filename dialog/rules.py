"""Limits of the dialog, kept apart from the code so deployments can change them."""

from dataclasses import dataclass, field

import phonenumbers


@dataclass(frozen=True, slots=True)
class PhoneRule:
    """Which phone numbers a business takes, as libphonenumber regions (``KG``, ``KZ``).

    ``region`` reads the national forms (``0555 123 456``, ``555123456``); ``allowed``
    adds the other countries whose numbers are taken when written in international
    form. The home region is always allowed.
    """

    region: str = "KG"
    allowed: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        region = self.region.upper()
        allowed = frozenset(code.upper() for code in self.allowed) | {region}
        unknown = sorted(code for code in allowed if code not in phonenumbers.SUPPORTED_REGIONS)
        if unknown:
            raise ValueError(f"unknown phone regions {unknown} (ISO 3166 codes such as KG)")
        object.__setattr__(self, "region", region)
        object.__setattr__(self, "allowed", allowed)


@dataclass(frozen=True, slots=True)
class DialogRules:
    """Bounds checked on each answer; a misconfiguration fails at start-up, not mid-dialog."""

    phone: PhoneRule = PhoneRule()
    address_min: int = 5
    address_max: int = 200
    quantity_min: int = 1
    quantity_max: int = 50
    # What the texts say of the business: its name in the greeting and the acceptance,
    # and how soon it promises to deliver.
    business_name: str = "Orderbot"
    delivery_minutes: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.address_min <= self.address_max:
            raise ValueError(f"bad address bounds {self.address_min}..{self.address_max}")
        if not 1 <= self.quantity_min <= self.quantity_max:
            raise ValueError(f"bad quantity bounds {self.quantity_min}..{self.quantity_max}")
        if not self.business_name.strip():
            raise ValueError("the business name is empty")
        if self.delivery_minutes < 1:
            raise ValueError(f"bad delivery promise {self.delivery_minutes} minutes")
