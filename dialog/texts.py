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
    OFFER_OWN_PHONE = "offer_own_phone"
    PHONE_INVALID = "phone_invalid"
    PHONE_REGION_NOT_ALLOWED = "phone_region_not_allowed"
    ASK_QUANTITY = "ask_quantity"
    QUANTITY_NOT_A_NUMBER = "quantity_not_a_number"
    QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
    CONFIRM = "confirm"
    CONFIRM_UNCLEAR = "confirm_unclear"
    ORDER_ACCEPTED = "order_accepted"
    STARTING_OVER = "starting_over"
    CANCELLED = "cancelled"
    HELP_ADDRESS = "help_address"
    HELP_PHONE = "help_phone"
    HELP_QUANTITY = "help_quantity"
    HELP_CONFIRMATION = "help_confirmation"
    SLOW_DOWN = "slow_down"
    HANDING_OVER = "handing_over"
    CONFIRM_PIN = "confirm_pin"
    PLEASE_TYPE_ADDRESS = "please_type_address"
    PLEASE_TYPE = "please_type"


TEXTS: dict[Msg, dict[Lang, str]] = {
    Msg.GREETING: {
        Lang.EN: "Hello! This is {business}, let's place your order. Please send the "
        "delivery address (street, house, apartment) or share your location. At any time "
        'write "help" if in doubt, '
        '"restart" to start over or "cancel" to stop.',
        Lang.RU: "Здравствуйте! Это {business}, давайте оформим заказ. Отправьте адрес "
        "доставки (улица, дом, квартира) или поделитесь геолокацией. В любой момент "
        "напишите «помощь», если что-то непонятно, "
        "«заново», чтобы начать сначала, или «отмена», чтобы прервать.",
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
        Lang.EN: "Thank you! Now send your phone number, for example {national} "
        "or {international}.",
        Lang.RU: "Спасибо! Теперь отправьте номер телефона, например {national} "
        "или {international}.",
    },
    Msg.OFFER_OWN_PHONE: {
        Lang.EN: 'Thank you! Use {own_phone} as your phone number? Answer "yes", '
        "or send another number.",
        Lang.RU: "Спасибо! Использовать номер {own_phone}? Ответьте «да» "
        "или отправьте другой номер.",
    },
    Msg.PHONE_INVALID: {
        Lang.EN: "This does not look like a valid phone number. "
        "Please send it like {national} or {international}.",
        Lang.RU: "Это не похоже на номер телефона. "
        "Отправьте его, например, так: {national} или {international}.",
    },
    Msg.PHONE_REGION_NOT_ALLOWED: {
        Lang.EN: "We can only take a phone number starting with {codes}. "
        "Please send another number.",
        Lang.RU: "Мы принимаем только номера, которые начинаются с {codes}. "
        "Отправьте другой номер.",
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
        Lang.EN: "Thank you! {business} has accepted your order and will deliver it within "
        "{minutes} minutes. We will let you know when it is on the way.",
        Lang.RU: "Спасибо! {business} принял ваш заказ и доставит его в течение {minutes} мин. "
        "Мы сообщим, когда он будет в пути.",
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
    Msg.HELP_ADDRESS: {
        Lang.EN: "We are placing your order, and I am waiting for the delivery address "
        '(street, house, apartment). Write "restart" to start over or "cancel" to stop.',
        Lang.RU: "Мы оформляем заказ, и я жду адрес доставки (улица, дом, квартира). "
        "Напишите «заново», чтобы начать сначала, или «отмена», чтобы прервать.",
    },
    Msg.HELP_PHONE: {
        Lang.EN: "We are placing your order, and I am waiting for your phone number, "
        'for example {national} or {international}. Write "restart" to start over '
        'or "cancel" to stop.',
        Lang.RU: "Мы оформляем заказ, и я жду номер телефона, например {national} "
        "или {international}. Напишите «заново», чтобы начать сначала, "
        "или «отмена», чтобы прервать.",
    },
    Msg.HELP_QUANTITY: {
        Lang.EN: "We are placing your order, and I am waiting for the quantity: a number "
        'from {min} to {max}, e.g. 3. Write "restart" to start over or "cancel" to stop.',
        Lang.RU: "Мы оформляем заказ, и я жду количество: число от {min} до {max}, "
        "например 3. Напишите «заново», чтобы начать сначала, или «отмена», чтобы прервать.",
    },
    Msg.HELP_CONFIRMATION: {
        Lang.EN: 'Your order is ready: answer "yes" to place it or "no" to start over '
        '(or "cancel" to stop).',
        Lang.RU: "Заказ готов: ответьте «да», чтобы оформить его, или «нет», чтобы начать "
        "заново (или «отмена», чтобы прервать).",
    },
    Msg.SLOW_DOWN: {
        Lang.EN: "You are writing faster than I can follow. Please wait a minute before "
        "your next message; what you sent meanwhile is kept for our team.",
        Lang.RU: "Вы пишете быстрее, чем я успеваю отвечать. Подождите минуту перед "
        "следующим сообщением; то, что вы уже отправили, сохранено для наших сотрудников.",
    },
    Msg.HANDING_OVER: {
        Lang.EN: "Thank you, a person from our team will answer you here shortly.",
        Lang.RU: "Спасибо, в этом чате вам скоро ответит наш сотрудник.",
    },
    Msg.CONFIRM_PIN: {
        Lang.EN: "Please check your order:\nAddress: {address}\nMap: {map_url}\n"
        'Phone: {phone}\nQuantity: {quantity}\nIs everything correct? Answer "yes" or "no".',
        Lang.RU: "Проверьте заказ:\nАдрес: {address}\nНа карте: {map_url}\n"
        "Телефон: {phone}\nКоличество: {quantity}\nВсё верно? Ответьте «да» или «нет».",
    },
    Msg.PLEASE_TYPE_ADDRESS: {
        Lang.EN: "Sorry, I cannot look at photos or listen to voice messages. Please type "
        "the delivery address (street, house, apartment) or share your location.",
        Lang.RU: "Извините, я не умею смотреть фото и слушать голосовые сообщения. Напишите, "
        "пожалуйста, адрес доставки (улица, дом, квартира) или поделитесь геолокацией.",
    },
    Msg.PLEASE_TYPE: {
        Lang.EN: "Sorry, I cannot look at photos or listen to voice messages. "
        "Please type your answer.",
        Lang.RU: "Извините, я не умею смотреть фото и слушать голосовые сообщения. "
        "Напишите, пожалуйста, ответ текстом.",
    },
}


def slow_down(lang: Lang) -> str:
    """What a customer is told, once a minute, while they write past their budget."""
    return render(Msg.SLOW_DOWN, lang)


def handing_over(lang: Lang) -> str:
    """What a customer who asked for a person is told, before the bot goes silent."""
    return render(Msg.HANDING_OVER, lang)


def render(msg: Msg, lang: Lang, **params: object) -> str:
    """The text of ``msg`` in ``lang``; params a text does not use are ignored."""
    return TEXTS[msg][lang].format(**params)


class Notice(StrEnum):
    """Texts of the order's life after the dialog: status news and the rating exchange.

    A table of its own because these take other placeholders (``order_id``, ``promo_code``,
    ``support_contact``) than the dialog's questions, and are sent by other paths (the outbox
    for status news, the worker for rating answers).
    """

    PREPARING = "preparing"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    ORDER_CANCELLED = "order_cancelled"
    RATING_ASK_AGAIN = "rating_ask_again"
    RATING_THANKS = "rating_thanks"
    RATING_PROMO = "rating_promo"
    RATING_APOLOGY = "rating_apology"
    RATING_SUPPORT = "rating_support"


NOTICES: dict[Notice, dict[Lang, str]] = {
    Notice.PREPARING: {
        Lang.EN: "Your order #{order_id} is being prepared.",
        Lang.RU: "Ваш заказ №{order_id} готовится.",
    },
    Notice.OUT_FOR_DELIVERY: {
        Lang.EN: "Your order #{order_id} is on its way!",
        Lang.RU: "Ваш заказ №{order_id} уже в пути!",
    },
    Notice.DELIVERED: {
        Lang.EN: "Your order #{order_id} has been delivered. Thank you for ordering!\n"
        "Please rate it from 1 to 5: send a digit or stars, e.g. 5 or ⭐⭐⭐⭐⭐.",
        Lang.RU: "Ваш заказ №{order_id} доставлен. Спасибо за заказ!\n"
        "Оцените его от 1 до 5: отправьте цифру или звёздочки, например 5 или ⭐⭐⭐⭐⭐.",
    },
    Notice.ORDER_CANCELLED: {
        Lang.EN: "Unfortunately, your order #{order_id} has been cancelled. "
        "Write to us to place a new order.",
        Lang.RU: "К сожалению, ваш заказ №{order_id} отменён. "
        "Напишите нам, чтобы оформить новый заказ.",
    },
    Notice.RATING_ASK_AGAIN: {
        Lang.EN: "Please rate order #{order_id} with a number from 1 to 5 "
        "(or with 1 to 5 stars ⭐).",
        Lang.RU: "Пожалуйста, оцените заказ №{order_id} числом от 1 до 5 "
        "(или звёздочками ⭐, от 1 до 5).",
    },
    Notice.RATING_THANKS: {
        Lang.EN: "Thank you for the rating! We are glad you liked it "
        "and will be happy to deliver to you again.",
        Lang.RU: "Спасибо за оценку! Рады, что вам понравилось, "
        "и будем рады привезти вам заказ снова.",
    },
    Notice.RATING_PROMO: {
        Lang.EN: "Here is a promo code for your next order: {promo_code}",
        Lang.RU: "Вот промокод на следующий заказ: {promo_code}",
    },
    Notice.RATING_APOLOGY: {
        Lang.EN: "Thank you for the rating, and we are sorry the order fell short. "
        "We will do better.",
        Lang.RU: "Спасибо за оценку, и простите, что заказ вас не порадовал. Мы исправимся.",
    },
    Notice.RATING_SUPPORT: {
        Lang.EN: "If something went wrong, please contact our support: {support_contact}",
        Lang.RU: "Если что-то пошло не так, напишите в поддержку: {support_contact}",
    },
}


def render_notice(notice: Notice, lang: Lang, **params: object) -> str:
    """The text of ``notice`` in ``lang``; params a text does not use are ignored."""
    return NOTICES[notice][lang].format(**params)
