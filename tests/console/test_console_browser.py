"""The console in a real headless Chromium, through the real gateway (Envoy, gRPC workers, the
offline provider): sign in with the admin token, see spend, generations, keys and models, and
manage keys. A screenshot of each page is written to the test's output folder; with
MG_CONSOLE_SCREENSHOT=<path> the overview's is also written there (`make console-screenshot`
refreshes docs/console.png this way)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.support.browser import PageProblems
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess, local_body

ADMIN_TOKEN = "mg_admin_" + "console-browser-test-token-0123456789abcdef"
HOSTILE_PROMPT = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b> & more'
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


# An alias and a route (a fallback list), for the models page.
CONFIG = """
aliases:
  quick: local/sketch
  fallback: [local/canvas, local/sketch]
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data = tmp_path_factory.mktemp("console-browser")
    (data / "mg.yaml").write_text(CONFIG)
    env = {
        "MG_ADMIN_TOKEN": ADMIN_TOKEN,
        "MG_KEEP_THUMBNAILS": "true",
        "MG_LOG_PROMPTS": "true",
        "MG_CONFIG": str(data / "mg.yaml"),
    }
    process = GatewayProcess(data / "gw", env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def spender(gw: GatewayProcess) -> str:
    """A project with a $0.01 cap that has spent $0.004 (four local/sketch images), beside another
    that spent a little of a larger cap."""
    key = gw.new_key("spender", "--budget-usd", "0.01")
    made = gw.generate({**local_body(prompt="a red kite"), "n": 4}, key)
    assert made.status_code == 200, made.text
    design = gw.new_key("design", "--budget-usd", "0.05", "--allow", "local/*")
    for prompt in ("a lighthouse at dusk", "a paper boat", "a map of an island"):
        assert gw.generate({**local_body(prompt=prompt), "n": 2}, design).status_code == 200
    return key


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems = PageProblems(page)
    page.on("dialog", lambda dialog: dialog.accept())  # the revoke confirmation
    yield page
    context.close()
    # No uncaught error, nothing the Content-Security-Policy refused.
    assert [e for e in problems.errors if "Failed to load resource" not in e] == []


def sign_in(page: Page, gw: GatewayProcess, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{gw.http_url}/console")
    page.fill("#admin-token", token)
    page.click("#sign-in button[type=submit]")


def signed_in(page: Page, gw: GatewayProcess, hash_: str = "#/overview") -> None:
    sign_in(page, gw)
    expect(page.locator("#nav")).to_be_visible()
    page.goto(f"{gw.http_url}/console{hash_}")
    expect(page.locator("section.page")).not_to_have_attribute("aria-busy", "true")


def shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_a_wrong_token_is_refused(page: Page, gw: GatewayProcess, tmp_path: Path) -> None:
    sign_in(page, gw, "mg_admin_wrong")
    expect(page.locator("#sign-in-error")).to_have_text("That token was refused.")
    expect(page.locator("#nav")).to_be_hidden()
    assert not [c for c in page.context.cookies() if c["name"] == "mg_admin_session"]
    shot(page, tmp_path, "sign-in-refused")


def test_the_overview_shows_the_spend_bar_of_a_project_that_spent(
    page: Page, gw: GatewayProcess, spender: str, tmp_path: Path
) -> None:
    signed_in(page, gw)
    row = page.locator('.spend-row[data-project="spender"]')
    expect(row).to_contain_text("$0.004 of $0.01")
    bar = float(row.locator("rect.spent").get_attribute("width") or 0)
    assert bar == pytest.approx(0.4 * 480, abs=1)  # 40 % of the cap
    # drawn as a bar: the spent part in the accent colour on a light track
    assert row.locator("rect.spent").evaluate("r => getComputedStyle(r).fill") == "rgb(53, 99, 233)"
    assert row.locator("rect.track").evaluate("r => getComputedStyle(r).fill") == "rgb(238, 240, 244)"
    assert row.locator("svg").evaluate("s => getComputedStyle(s).backgroundColor") == "rgba(0, 0, 0, 0)"
    expect(page.locator("#tile-requests .value")).not_to_have_text("0")
    expect(page.locator("#providers")).to_contain_text("local")
    expect(page.locator("#per-hour canvas")).to_have_count(1)
    path = shot(page, tmp_path, "overview")
    if target := os.environ.get("MG_CONSOLE_SCREENSHOT"):
        Path(target).write_bytes(path.read_bytes())


def test_a_cap_that_renews_shows_its_period_spend_and_renewal(
    page: Page, gw: GatewayProcess, tmp_path: Path
) -> None:
    key = gw.new_key("monthly", "--budget-usd", "0.01", "--budget-period", "month")
    assert gw.generate(local_body(), key).status_code == 200  # $0.001
    now = datetime.now(UTC)
    following = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    renews = f"renews {following:%Y-%m}-01 00:00 UTC"
    signed_in(page, gw)
    row = page.locator('.spend-row[data-project="monthly"]')
    expect(row).to_contain_text("$0.001 of $0.01 a month")
    expect(row).to_contain_text(renews)
    page.goto(f"{gw.http_url}/console#/projects")
    card = page.locator('article.project[data-project="monthly"]')
    expect(card.locator("p.hint").first).to_contain_text(f"Spent $0.001 of $0.01 a month · {renews}")
    card.locator('input[name="period"]').fill("7d")
    card.locator("form.settings button[type=submit]").click()
    card = page.locator('article.project[data-project="monthly"]')
    # A new period carries what the month had spent into its first seven days.
    expect(card.locator("p.hint").first).to_contain_text("Spent $0.001 of $0.01 per 7 days · renews ")
    card.locator('input[name="period"]').fill("fortnight")
    card.locator("form.settings button[type=submit]").click()
    expect(page.locator("#toast")).to_contain_text("'fortnight' is not a budget period")
    shot(page, tmp_path, "periodic-project")


def test_the_gallery_shows_a_generated_image_and_a_prompt_with_html_as_text(
    page: Page, gw: GatewayProcess, tmp_path: Path
) -> None:
    made = gw.generate(local_body(prompt=HOSTILE_PROMPT))
    assert made.status_code == 200, made.text
    request_id = made.headers["x-request-id"]
    signed_in(page, gw, "#/generations")
    tile = page.locator(f'.tile-image[data-request-id="{request_id}"]')
    expect(tile).to_be_visible()
    image = tile.locator("img")
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") > 0  # the thumbnail loaded
    expect(tile.locator(".prompt")).to_have_text(HOSTILE_PROMPT)
    assert tile.locator(".prompt script, .prompt img, .prompt b").count() == 0
    assert page.evaluate("window.pwned") is None
    assert "null" not in page.locator("#page-generations").inner_text().split()
    shot(page, tmp_path, "generations")
    tile.click()
    details = page.locator("#generation-details")
    expect(details).to_be_visible()
    expect(details).to_contain_text(request_id)
    expect(details.locator("dd").filter(has_text="window.pwned")).to_have_text(HOSTILE_PROMPT)
    assert page.evaluate("window.pwned") is None
    shot(page, tmp_path, "generation-details")


def test_a_key_made_in_the_console_works_until_it_is_revoked(
    page: Page, gw: GatewayProcess, tmp_path: Path
) -> None:
    signed_in(page, gw, "#/projects")
    page.fill("#new-project-name", "made-in-console")
    page.fill("#new-project-budget", "2")
    page.fill("#new-project-allow", "local/*")
    page.click("#new-project button[type=submit]")
    card = page.locator('article.project[data-project="made-in-console"]')
    expect(card).to_be_visible()
    card.locator("button.create-key").click()
    secret = card.locator("code.secret")
    expect(secret).to_have_text(re.compile(r"^mg_live_\S+$"))
    key = secret.inner_text()
    assert gw.generate(local_body(), key).status_code == 200
    shot(page, tmp_path, "projects")
    card.locator("button.revoke").click()
    expect(card.locator("tr.revoked")).to_have_count(1)
    assert_error(gw.generate(local_body(), key), 401, "UNAUTHENTICATED")
    # each change is in the audit list, made by the session of the admin token
    audit = page.locator("#audit")
    for action in ("project.create", "key.create", "key.revoke"):
        expect(audit.locator(f'tr[data-action="{action}"]').first).to_contain_text(
            "session of admin token adm_"
        )
    expect(audit.locator('tr[data-action="project.create"]').first).to_contain_text("made-in-console")


def wait_until_in_flight(gw: GatewayProcess, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{gw.http_url}/v1/admin/inflight", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        if answer.json().get("generations"):
            return
        time.sleep(0.05)
    raise AssertionError("the generation never showed as running")


def test_the_overview_lists_generations_running_now(page: Page, gw: GatewayProcess) -> None:
    slow: list[httpx.Response] = []
    running = threading.Thread(target=lambda: slow.append(gw.generate(local_body(delay_ms=6000))))
    running.start()
    try:
        wait_until_in_flight(gw)
        signed_in(page, gw)
        expect(page.locator("#running")).to_contain_text("local/sketch")
        expect(page.locator("#running tbody tr")).to_have_count(1)
    finally:
        running.join(30)
    assert slow[0].status_code == 200
    page.reload()
    expect(page.locator("#running")).to_have_text("No generation is running.")


def test_the_models_page_lists_the_catalog(page: Page, gw: GatewayProcess, tmp_path: Path) -> None:
    signed_in(page, gw, "#/models")
    row = page.locator('tr[data-model="local/sketch"]')
    expect(row).to_contain_text("yes")
    expect(row).to_contain_text("$0.001")
    expect(row.locator("td").nth(5)).to_have_text("quick")  # the alias naming it
    expect(row.locator("td").nth(6)).to_have_text("fallback (#2)")  # the route trying it second
    expect(page.locator('tr[data-model="local/canvas"] td').nth(6)).to_have_text("fallback (#1)")
    expect(page.locator('tr[data-model="openai/gpt-image-1"]')).to_contain_text("no")
    shot(page, tmp_path, "models")


def test_mg_console_false_is_404_in_the_browser(browser: Browser, tmp_path: Path) -> None:
    off = GatewayProcess(tmp_path / "off", {"MG_CONSOLE": "false", "MG_ADMIN_TOKEN": ADMIN_TOKEN}).start()
    try:
        page = browser.new_page()
        response = page.goto(f"{off.http_url}/console")
        assert response is not None and response.status == 404
        assert page.locator("#sign-in").count() == 0
        page.close()
    finally:
        off.stop()


def test_the_ready_block_names_the_console_and_the_dev_admin_token_signs_in(
    page: Page, gateway: GatewayProcess
) -> None:
    """`make run` (mg serve on a fresh data dir, no MG_ADMIN_TOKEN): the console's URL and the
    admin token generated for the dev setup are printed, and that token signs in."""
    printed = "".join(gateway.output)
    console = re.search(r"Console: +(http://\S+/console) ", printed)
    token = re.search(r"admin token: (mg_admin_\S+)\)", printed)
    assert console is not None and token is not None, printed
    assert console.group(1) == f"{gateway.http_url}/console"
    page.goto(console.group(1))
    page.fill("#admin-token", token.group(1))
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#page-overview h1")).to_have_text("Overview")
    expect(page.locator('.spend-row[data-project="dev"]')).to_be_visible()
    # Without MG_KEEP_THUMBNAILS and MG_LOG_PROMPTS the generations are the ledger's rows, no prompt.
    made = gateway.generate(local_body(prompt="kept nowhere"))
    assert made.status_code == 200, made.text
    page.goto(f"{gateway.http_url}/console#/generations")
    row = page.locator(f'tr[data-request-id="{made.headers["x-request-id"]}"]')
    expect(row).to_contain_text("local/sketch")
    expect(row.locator("td.prompt")).to_have_text("\N{EN DASH}")  # the "none" mark
    expect(page.locator("#page-generations img")).to_have_count(0)
    assert "kept nowhere" not in page.content()
    # Signing out ends the session: a reload asks to sign in again.
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    page.reload()
    expect(page.locator("#sign-in")).to_be_visible()


NOW = 1_800_000_000
LEDGER_ROWS = [
    # provider, outcome, latency, images, seconds ago, project, cost
    ("a", "ok", 100, 2, 10, "p", "1000"),
    ("a", "partial", 300, 1, 4000, "p", "500"),
    ("a", "CONTENT_POLICY_VIOLATION", 5, 0, 10, "q", "0"),
    ("b", "UPSTREAM_ERROR", 9, 0, 90000, "q", "0"),
]
FIGURES = """async ([src, rows, now]) => {
  const s = await import(src.replace("app.js", "stats.js"));
  const [starts, requests, images] = s.perHour(rows, now, 24);
  const percentiles = [0.5, 0.95].map((p) => s.percentile([1, 2, 3, 4], p));
  return {
    percentiles: [...percentiles, s.percentile([], 0.5)], requests, images, hours: starts.length,
    providers: s.byProvider(rows).map((g) => [g.provider, g.calls, g.errors, g.refusals, g.p50, g.p95]),
    spend: [...s.spendByProject(rows)],
  };
}"""


def test_the_overview_figures_from_ledger_rows(page: Page, gw: GatewayProcess) -> None:
    """stats.js, as the browser runs it: nearest-rank percentiles, hourly buckets, and which
    outcomes count as errors and which as refusals."""
    page.goto(f"{gw.http_url}/console")
    app = page.locator("script[type=module]").get_attribute("src") or ""
    rows = [
        {
            "provider": provider,
            "outcome": outcome,
            "upstream_latency_ms": latency,
            "images_returned": images,
            "created_at": NOW - ago,
            "project_id": project,
            "cost_micros": cost,
        }
        for provider, outcome, latency, images, ago, project, cost in LEDGER_ROWS
    ]
    figures = page.evaluate(FIGURES, [app, rows, NOW])
    assert figures["percentiles"] == [2, 4, None]
    assert figures["hours"] == 24
    assert figures["requests"][-1] == 2 and figures["requests"][-2] == 1 and sum(figures["requests"]) == 3
    assert figures["images"][-1] == 2 and figures["images"][-2] == 1
    assert figures["providers"] == [["a", 3, 0, 1, 100, 300], ["b", 1, 1, 0, None, None]]
    assert figures["spend"] == [["p", 1500], ["q", 0]]
