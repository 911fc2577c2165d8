"""Every text the customer sees, in one table so a translation is one edit in one place.

Placeholders are ``str.format`` fields filled by ``render``; customer input is only ever passed
as a value, never as a template, so braces in an address are harmless.
"""

from enum import StrEnum

from dialog.state import Lang


class Msg(StrEnum):
    GREETING = "greeting"
    ADDRESS_TOO_SHORT = "address_too_short"
    ADDRESS_TOO_LONG = "address_too_long"
    ASK_PHONE = "ask_phone"
    PHONE_INVALID = "phone_invalid"
    ASK_QUANTITY = "ask_quantity"
    QUANTITY_NOT_A_NUMBER = "quantity_not_a_number"
    QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
    CONFIRM = "confirm"
    CONFIRM_UNCLEAR = "confirm_unclear"
    ORDER_ACCEPTED = "order_accepted"
    STARTING_OVER = "starting_over"
    CANCELLED = "cancelled"


TEXTS: dict[Msg, dict[Lang, str]] = {
    Msg.GREETING: {
        Lang.EN: "Hello! Let's place your order. Please send the delivery address "
        '(street, house, apartment). Write "cancel" at any time to stop.',
        Lang.RU: "Здравствуйте! Давайте оформим заказ. Отправьте адрес доставки "
        "(улица, дом, квартира). Чтобы прервать оформление, напишите «отмена».",
    },
    Msg.ADDRESS_TOO_SHORT: {
        Lang.EN: "This address is too short: it must be {min} to {max} characters long. "
        "Please send the full delivery address (street, house, apartment).",
        Lang.RU: "Адрес слишком короткий: нужно от {min} до {max} символов. "
        "Отправьте полный адрес доставки (улица, дом, квартира).",
    },
    Msg.ADDRESS_TOO_LONG: {
        Lang.EN: "This address is too long: it must be {min} to {max} characters long. "
        "Please send a shorter delivery address.",
        Lang.RU: "Адрес слишком длинный: нужно от {min} до {max} символов. "
        "Отправьте адрес доставки короче.",
    },
    Msg.ASK_PHONE: {
        Lang.EN: "Thank you! Now send your phone number in the format {phone_format}.",
        Lang.RU: "Спасибо! Теперь отправьте номер телефона в формате {phone_format}.",
    },
    Msg.PHONE_INVALID: {
        Lang.EN: "This does not look like a valid phone number. "
        "Please send it in the format {phone_format}.",
        Lang.RU: "Это не похоже на номер телефона. Отправьте его в формате {phone_format}.",
    },
    Msg.ASK_QUANTITY: {
        Lang.EN: "How many would you like? Send a number from {min} to {max}.",
        Lang.RU: "Сколько штук заказать? Отправьте число от {min} до {max}.",
    },
    Msg.QUANTITY_NOT_A_NUMBER: {
        Lang.EN: "Please send the quantity as a whole number from {min} to {max}.",
        Lang.RU: "Отправьте количество целым числом от {min} до {max}.",
    },
    Msg.QUANTITY_OUT_OF_RANGE: {
        Lang.EN: "You can order from {min} to {max}. Please send a number in that range.",
        Lang.RU: "Можно заказать от {min} до {max}. Отправьте число в этих пределах.",
    },
    Msg.CONFIRM: {
        Lang.EN: "Please check your order:\nAddress: {address}\nPhone: {phone}\n"
        'Quantity: {quantity}\nIs everything correct? Answer "yes" or "no".',
        Lang.RU: "Проверьте заказ:\nАдрес: {address}\nТелефон: {phone}\n"
        "Количество: {quantity}\nВсё верно? Ответьте «да» или «нет».",
    },
    Msg.CONFIRM_UNCLEAR: {
        Lang.EN: 'Please answer "yes" to place the order or "no" to start over.',
        Lang.RU: "Ответьте «да», чтобы оформить заказ, или «нет», чтобы начать заново.",
    },
    Msg.ORDER_ACCEPTED: {
        Lang.EN: "Thank you! Your order is accepted. We will let you know when it is on the way.",
        Lang.RU: "Спасибо! Ваш заказ принят. Мы сообщим, когда он будет в пути.",
    },
    Msg.STARTING_OVER: {
        Lang.EN: "No problem, let's start over. Please send the delivery address "
        "(street, house, apartment).",
        Lang.RU: "Хорошо, начнём заново. Отправьте адрес доставки (улица, дом, квартира).",
    },
    Msg.CANCELLED: {
        Lang.EN: "Your order is cancelled. Write anything to start a new order.",
        Lang.RU: "Заказ отменён. Напишите что-нибудь, чтобы оформить новый заказ.",
    },
}


def render(msg: Msg, lang: Lang, **params: object) -> str:
    """The text of ``msg`` in ``lang``; params a text does not use are ignored."""
    return TEXTS[msg][lang].format(**params)
