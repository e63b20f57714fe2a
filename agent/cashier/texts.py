"""Every word the cashier screen shows, in Dutch (the default) and English.

Refusal reasons come from `agent.codes` in English and never repeat the input; they are matched
here by their start, so a reworded reason falls back to a general sentence instead of English.
"""

from __future__ import annotations

Language = str  # "nl" | "en"

PAGE: dict[Language, dict[str, str]] = {
    "nl": {
        "title": "BONIQ kassa",
        "label": "E-mailadres van de klant",
        "button": "Bon naar dit e-mailadres",
        "placeholder": "naam@voorbeeld.nl",
        "recent": "Laatste scans aan deze kassa",
        "empty": "Nog geen scans.",
        "offline": "Geen verbinding met de BONIQ-agent; de lijst is niet actueel.",
        "sending": "Bezig…",
        "duplicate": "Dit e-mailadres wacht al op de betaling.",
        "pin_label": "Pincode van de kassa",
        "pin_button": "Openen",
        "pin_wrong": "Onjuiste pincode.",
        "pin_locked": "Te vaak een onjuiste pincode: probeer het over een minuut opnieuw.",
        "till": "kassa",
        "lang": "nl",
    },
    "en": {
        "title": "BONIQ till",
        "label": "Customer's e-mail address",
        "button": "Send receipt to this address",
        "placeholder": "name@example.com",
        "recent": "Latest scans at this till",
        "empty": "No scans yet.",
        "offline": "No connection to the BONIQ agent; the list is not up to date.",
        "sending": "Sending…",
        "duplicate": "This address is already waiting for the payment.",
        "pin_label": "Till PIN",
        "pin_button": "Open",
        "pin_wrong": "Wrong PIN.",
        "pin_locked": "Too many wrong PINs: try again in a minute.",
        "till": "till",
        "lang": "en",
    },
}

# outcome → (icon, headline, what it means for the cashier)
OUTCOMES: dict[Language, dict[str, tuple[str, str, str]]] = {
    "nl": {
        "pending": ("⏳", "Geaccepteerd", "Wacht op de betaling aan deze kassa."),
        "delivered": ("✔", "Afgeleverd", "De bon gaat naar de klant."),
        "rejected": ("✖", "Geweigerd", ""),
        "unsure": (
            "?",
            "Onzeker",
            "Zeg de klant: de digitale bon komt niet vanzelf; geef de papieren bon mee.",
        ),
        "expired": (
            "⌛",
            "Verlopen",
            "Geen betaling op tijd. Zeg de klant: scan opnieuw vlak voor het betalen.",
        ),
        "cancelled": ("⊘", "Vervallen", "Deze scan leidt niet tot een bon."),
        "assigned": ("✔", "Toegewezen", "Support heeft de bon aan de klant gegeven."),
    },
    "en": {
        "pending": ("⏳", "Accepted", "Waiting for the payment at this till."),
        "delivered": ("✔", "Delivered", "The receipt goes to the customer."),
        "rejected": ("✖", "Refused", ""),
        "unsure": (
            "?",
            "Unsure",
            (
                "Tell the customer: the digital receipt will not come by itself; "
                "give them the paper receipt."
            ),
        ),
        "expired": (
            "⌛",
            "Expired",
            "No payment in time. Tell the customer: scan again just before paying.",
        ),
        "cancelled": ("⊘", "Cancelled", "This scan does not lead to a receipt."),
        "assigned": ("✔", "Assigned", "Support gave the receipt to the customer."),
    },
}

REASONS: dict[Language, list[tuple[str, str]]] = {
    "nl": [
        (
            "not a valid e-mail address",
            "Dit is geen geldig e-mailadres. Controleer de spelling met de klant.",
        ),
        ("empty input", "Er is niets ingevuld."),
        ("input longer than", "Te lang voor een e-mailadres of BONIQ-code."),
        ("not a BONIQ link", "Dit is geen BONIQ-link."),
        (
            "looks like a product barcode",
            "Dit lijkt een streepjescode van een product, geen BONIQ-code.",
        ),
        (
            "BONIQ code with a wrong length",
            "De BONIQ-code klopt niet (verkeerde lengte of controleteken). Scan opnieuw.",
        ),
        (
            "not a BONIQ code or e-mail address",
            "Dit is geen e-mailadres (er ontbreekt een @) en geen BONIQ-code.",
        ),
        ("the store refused", "De agent kon de scan niet opslaan. Probeer het opnieuw."),
    ],
    "en": [
        (
            "not a valid e-mail address",
            "This is not a valid e-mail address. Check the spelling with the customer.",
        ),
        ("empty input", "Nothing was entered."),
        ("input longer than", "Too long for an e-mail address or BONIQ code."),
        ("not a BONIQ link", "This is not a BONIQ link."),
        ("looks like a product barcode", "This looks like a product barcode, not a BONIQ code."),
        (
            "BONIQ code with a wrong length",
            "The BONIQ code is wrong (length or check character). Scan again.",
        ),
        (
            "not a BONIQ code or e-mail address",
            "This is not an e-mail address (an @ is missing) nor a BONIQ code.",
        ),
        ("the store refused", "The agent could not store the scan. Try again."),
    ],
}

SOURCES: dict[Language, dict[str, str]] = {
    "nl": {"cashier": "ingetypt", "manual": "met de hand", "": "gescand"},
    "en": {"cashier": "typed", "manual": "by hand", "": "scanned"},
}

FALLBACK_REASON = {"nl": "Niet herkend. Probeer het opnieuw.", "en": "Not recognised. Try again."}


def reason_text(reason: str, language: Language) -> str:
    for start, text in REASONS[language]:
        if reason.startswith(start):
            return text
    return FALLBACK_REASON[language]


def source_text(source: str, language: Language) -> str:
    """How a claim reached the agent, in the cashier's words (`serial:/dev/ttyACM0` → scanned)."""
    kind = source.split(":", 1)[0]
    return SOURCES[language].get(kind, SOURCES[language][""])
