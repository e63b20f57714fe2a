"""The cashier screen in a real headless Chromium, served by `boniq-agent run`: a cashier types
the customer's e-mail address, sees it accepted and then delivered once the sale is booked, all
without reloading; a mistyped address is refused in plain Dutch and never becomes a claim."""

from __future__ import annotations

import time

import pytest
from agent_harness import ROOT, report_figure, wait_until
from cashier_page import TILL, make_daemon, page_url
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SCREENSHOT = ROOT / "tests" / ".screenshots" / "cashier-screen-1024x768.png"
ADDRESS = "bram.dekker@example.nl"
MASKED = "b***@example.nl"


def open_page(browser, agent) -> None:
    agent.start()
    agent.wait_ready()
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.get(agent.cashier_url)
    browser.execute_script("window.notReloaded = true;")


def give_address(browser, address: str) -> None:
    field = browser.find_element(By.ID, "address")
    field.clear()
    field.send_keys(address)
    browser.find_element(By.CSS_SELECTOR, "#claim button").click()


def wait_for(browser, condition, what: str, timeout: float = 20.0):
    return WebDriverWait(browser, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message=f"the page never showed {what}"
    )


def newest_entry(browser) -> dict | None:
    return browser.execute_script("""
        const li = document.querySelector('#feed li.entry');
        return li && {outcome: li.dataset.outcome, text: li.innerText};""")


def test_an_email_claim_from_the_page_is_accepted_then_delivered_without_reload(
    browser, agent, kassa, cloud
):
    open_page(browser, agent)
    assert (
        browser.find_element(By.CSS_SELECTOR, "label[for=address]").text
        == "E-mailadres van de klant"
    )

    give_address(browser, ADDRESS)
    result = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "result").is_displayed() and d.find_element(By.ID, "result")
        ),
        "the answer to the button",
    )
    assert result.get_attribute("data-outcome") == "accepted"
    assert "Geaccepteerd" in result.text
    entry = wait_for(browser, lambda d: newest_entry(d), "the claim in the list")
    assert entry["outcome"] == "pending" and MASKED in entry["text"]
    assert "Geaccepteerd" in entry["text"] and "Wacht op de betaling" in entry["text"]
    [claim] = agent.claims_of(ADDRESS)
    assert (claim.customer_kind, claim.source, claim.workplace) == ("email", "cashier", TILL)

    wait_until(lambda: agent.claim_fenced(ADDRESS), what="the agent to poll after the claim")
    receipt_id = kassa.book_sale(TILL, after=4)  # the payment completes 4 s on
    booked = time.monotonic()
    entry = wait_for(
        browser,
        lambda d: (e := newest_entry(d)) and e["outcome"] == "delivered" and e,
        "the claim delivered",
    )
    lag = time.monotonic() - booked
    report_figure("cashier screen", delivered_shown_after_sale_s=f"{lag:.2f}")
    assert "Afgeleverd" in entry["text"] and MASKED in entry["text"]
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded"
    wait_until(lambda: cloud.count() >= 1, what="the receipt in the cloud")
    [payload] = cloud.receipts()
    assert payload["pos"]["receipt_id"] == receipt_id
    assert payload["customer"] == {"email": ADDRESS}
    assert ADDRESS not in browser.page_source


@pytest.mark.parametrize(
    "mistyped", ["bram.dekker@example", "bram dekker@example.nl", "bram.dekker.example.nl"]
)
def test_a_mistyped_address_is_refused_in_dutch_and_never_becomes_a_claim(browser, agent, mistyped):
    open_page(browser, agent)
    give_address(browser, mistyped)
    result = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "result").is_displayed() and d.find_element(By.ID, "result")
        ),
        "the answer to the button",
    )
    assert result.get_attribute("data-outcome") == "rejected"
    assert "Geweigerd" in result.text and "e-mailadres" in result.text
    entry = wait_for(browser, lambda d: newest_entry(d), "the refusal in the list")
    assert entry["outcome"] == "rejected" and "Geweigerd" in entry["text"]
    assert mistyped not in browser.page_source.replace(
        browser.find_element(By.ID, "address").get_attribute("value"), ""
    )
    assert browser.find_element(By.ID, "address").get_attribute("value") == mistyped
    assert not any(agent.summary()["claims_by_state"].values())


def test_screenshot_of_the_page_at_1024x768_for_people_to_look_at(browser, agent, kassa):
    """Every outcome a cashier meets in a shift, on one screen: saved under tests/.screenshots/."""
    open_page(browser, agent)
    give_address(browser, "anna.jansen@example.nl")
    wait_until(lambda: agent.claim_fenced("anna.jansen@example.nl"), what="Anna's claim")
    kassa.book_sale(TILL, after=4)
    wait_for(
        browser,
        lambda d: (e := newest_entry(d)) and e["outcome"] == "delivered",
        "Anna's receipt delivered",
    )
    agent.scan("8710400011111")  # a product's barcode on the scanner
    wait_for(
        browser,
        lambda d: (e := newest_entry(d)) and e["outcome"] == "rejected",
        "the scanner's refusal",
    )
    give_address(browser, "chris@example")
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "result").get_attribute("data-outcome") == "rejected",
        "the typo refused",
    )
    give_address(browser, "dewi.bakker@example.nl")
    wait_for(
        browser,
        lambda d: (e := newest_entry(d)) and e["outcome"] == "pending",
        "Dewi's claim waiting",
    )
    size = browser.execute_script("return [window.innerWidth, window.innerHeight];")
    assert size == [1024, 768]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    report_figure("cashier screen", screenshot=SCREENSHOT.relative_to(ROOT))
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {  # a 10-inch tablet, upright
            "width": 800,
            "height": 1280,
            "deviceScaleFactor": 1,
            "mobile": True,
        },
    )
    tablet = SCREENSHOT.with_name("cashier-screen-tablet-800x1280.png")
    assert browser.save_screenshot(str(tablet))
    assert browser.execute_script("return document.documentElement.scrollWidth;") <= 800


def test_the_page_says_so_when_the_agent_is_gone(browser, agent):
    open_page(browser, agent)
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#feed li"), "the empty list")
    assert browser.find_element(By.CSS_SELECTOR, "#feed li").text == "Nog geen scans."
    assert agent.terminate() == 0
    banner = wait_for(
        browser,
        lambda d: (
            d.find_element(By.ID, "offline").is_displayed() and d.find_element(By.ID, "offline")
        ),
        "the offline banner",
    )
    assert "Geen verbinding met de BONIQ-agent" in banner.text


def test_behind_a_pin_the_browser_logs_in_and_makes_the_claim(browser, tmp_path, kassa, cloud):
    """The PIN form is a plain form POST: the browser must send an Origin the page accepts."""
    daemon = make_daemon(tmp_path, kassa, cloud, pin="4821")
    daemon.start()
    try:
        browser.delete_all_cookies()
        browser.get(page_url(daemon))
        browser.find_element(By.ID, "pin").send_keys("1234")
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_for(browser, lambda d: "Onjuiste pincode." in d.page_source, "the wrong-PIN message")
        browser.find_element(By.ID, "pin").send_keys("4821")
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "address"), "the page after the PIN")
        give_address(browser, ADDRESS)
        wait_for(
            browser,
            lambda d: d.find_element(By.ID, "result").get_attribute("data-outcome") == "accepted",
            "the claim accepted",
        )
        assert [c.customer for c in daemon.store.claims()] == [ADDRESS]
    finally:
        daemon.stop()
