"""The web view of a running quick start, in a real headless browser (Debian's chromium
through its chromedriver): the topology drawn, a power action through the page, the serial
console typed into, and nothing done without the run's token."""

from __future__ import annotations

import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.guest.build import GuestPaths
from tests.prereqs import require
from tests.runtime.harness import HostNetns, VdcRun, call_in_netns
from vdc_runtime.graph import topology
from vdc_runtime.spec import load_files
from vdc_runtime.ui import auth

pytestmark = [pytest.mark.root, pytest.mark.slow]

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yml"
URL = "http://127.0.0.1:10808"
# What the page's console holds: xterm.js keeps it in its buffer, not all in the DOM.
TERMINAL_TEXT = """
const b = term.buffer.active, out = [];
for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
return out.join("\\n");
"""
# A request made by the page's own script, as a person's click would make it.
PAGE_POST = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {method: "POST", headers: {"X-Vdc-UI": "1"}})
  .then(r => done(r.status), e => done(String(e)));
"""
OPEN_SOCKET = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(`ws://${location.host}/ui/nodes/worker-1/console`);
ws.onopen = () => { ws.close(); done("open"); };
ws.onerror = () => done("refused");
"""


def browser(profile: Path) -> Any:
    require.web_assets()
    chromium, chromedriver = require.browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-crash-reporter", "--disable-breakpad", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=chromedriver)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(20)
    return driver


def until(driver: Any, what: Callable[[Any], Any], timeout: float = 60) -> Any:
    """`what` polled until it gives something true. An element the page redrew between
    finding it and reading it (the machines' table is redrawn as their states change) is
    looked for again at the next poll, not a failure."""
    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    ).until(what)


def click(driver: Any, selector: str) -> None:
    """Click what `selector` finds, found again if the page redrew it meanwhile."""

    def clicked(d: Any) -> bool:
        try:
            d.find_element(By.CSS_SELECTOR, selector).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    until(driver, clicked)


def in_browser(host: HostNetns, profile: Path, scenario: Callable[[Any], None]) -> None:
    """`scenario` with a browser whose every socket is in the test's host namespace."""

    def go() -> None:
        driver = browser(profile)
        try:
            scenario(driver)
        finally:
            driver.quit()

    call_in_netns(host.name, go)
    # The browser is gone with its session (the run's leftover check does not know it).
    deadline = time.monotonic() + 10
    while (left := browser_processes(profile)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, left


def browser_processes(profile: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if str(profile).encode() in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def drawn_labels(driver: Any) -> set[str]:
    svg = driver.find_element(By.CSS_SELECTOR, "#topology svg").get_attribute("outerHTML")
    root = ET.fromstring(svg)
    return {t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")}


def both_ready(driver: Any) -> set[str] | None:
    """The topology's labels, once it shows both machines ready."""
    labels = drawn_labels(driver)
    return labels if {"worker-1 [ready]", "worker-2 [ready]"} <= labels else None


def quickstart(lab: Path, guest: GuestPaths) -> Path:
    """The quick start as `make demo` runs it (the test guest in its boot directory), in
    `lab` rather than in the checkout."""
    shutil.copytree(QUICKSTART.parent / "quickstart", lab / "quickstart")
    shutil.copy(QUICKSTART, lab / QUICKSTART.name)
    shutil.copy(guest.vmlinuz, lab / "quickstart" / "boot" / "vmlinuz")
    shutil.copy(guest.initrd, lab / "quickstart" / "boot" / "initrd.gz")
    return lab / QUICKSTART.name


def test_web_view_of_a_running_quickstart(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = VdcRun(host, [quickstart(tmp_path / "lab", guest)], tmp_path / "run").start()
    running.append(run)
    run.wait_ready(120)
    token = (tmp_path / "run" / auth.TOKEN_FILE).read_text().strip()
    assert f"/ui/?token={token}" in run.output  # what the run printed
    spec = topology.build(load_files([QUICKSTART]))
    boots_before = run.api("/nodes/worker-1")[1]["boots"]

    def without_token(driver: Any) -> None:
        driver.get(f"{URL}/ui/")
        # The page draws the quick start: its machines (with their state), networks,
        # router.
        until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#topology svg"))
        labels = until(driver, both_ready)
        for drawn in spec.nodes:  # networks, routers, machines
            assert any(drawn.name in label for label in labels), (drawn.name, labels)
        rows = driver.find_elements(By.CSS_SELECTOR, "#machines tbody tr")
        assert sorted(r.get_attribute("data-name") for r in rows) == ["worker-1", "worker-2"]
        # Its BMC endpoints, once the guest has announced its BMC address.
        cell = "tr[data-name=worker-1] td.bmc"
        until(driver, lambda d: "IPMI" in d.find_element(By.CSS_SELECTOR, cell).text, 120)
        assert "Redfish https://10.72.16." in driver.find_element(By.CSS_SELECTOR, cell).text
        # Read-only: no actions offered, and asking anyway is refused.
        assert "read-only" in driver.find_element(By.ID, "access").text
        assert not driver.find_elements(By.CSS_SELECTOR, "button[data-action]")
        post = driver.execute_async_script(PAGE_POST, "/ui/nodes/worker-1/reset")
        assert post == 401
        assert driver.execute_async_script(OPEN_SOCKET) == "refused"
        driver.get(f"{URL}/ui/?token=wrong")
        assert "wrong token" in driver.page_source

    in_browser(host, tmp_path / "profile-a", without_token)
    status, _ = run.api("/ui/nodes/worker-1/reset", method="POST")
    assert status == 401
    assert run.api("/nodes/worker-1")[1]["boots"] == boots_before  # nothing happened

    def with_token(driver: Any) -> None:
        driver.get(f"{URL}/ui/?token={token}")
        assert driver.current_url == f"{URL}/ui/"  # the token left the address bar
        until(driver, lambda d: "enabled" in d.find_element(By.ID, "access").text)
        # The console: typed keys reach the guest, its answer comes back on the page.
        click(driver, "button[data-console=worker-1]")
        until(driver, lambda d: d.find_element(By.ID, "console-status").text == "connected")
        until(driver, lambda d: "VDC-GUEST-DONE" in d.execute_script(TERMINAL_TEXT), 180)
        typing = driver.find_element(By.CSS_SELECTOR, "#terminal .xterm-helper-textarea")
        typing.send_keys("\n")
        until(driver, lambda d: "vdc-guest#" in d.execute_script(TERMINAL_TEXT))
        typing.send_keys("echo hi-$((6*7))\n")
        until(driver, lambda d: "hi-42" in d.execute_script(TERMINAL_TEXT))

        # A power action, confirmed: the machine reboots, its console shows the second
        # boot (the guest counts boots of one QEMU process).
        click(driver, "button[data-node=worker-1][data-action=reset]")
        dialog = driver.find_element(By.ID, "confirm")
        until(driver, lambda d: dialog.get_attribute("open") is not None)
        assert "reset worker-1" in driver.find_element(By.ID, "confirm-text").text
        driver.find_element(By.ID, "confirm-ok").click()
        until(driver, lambda d: "VDC-GUEST-READY boot=2" in d.execute_script(TERMINAL_TEXT), 240)
        assert driver.find_element(By.ID, "error").text == ""
        # The console log view shows both boots.
        click(driver, "button[data-log=worker-1]")
        until(driver, lambda d: "boot=2" in d.find_element(By.ID, "log").text)
        assert "VDC-GUEST-READY boot=1" in driver.find_element(By.ID, "log").text

    in_browser(host, tmp_path / "profile-b", with_token)
    assert run.api("/nodes/worker-1")[1]["boots"] > boots_before
    assert run.stop() == 0, run.output
