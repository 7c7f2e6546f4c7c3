"""Three replicas on one store: three complete gateways (`mg serve`, each with its own Envoy and one
worker) on one PostgreSQL database with rate limits in one Redis, in front of one fake OpenAI that
takes a while to answer, so requests to different replicas overlap. What one replica enforces holds
across all three: the spend cap, the rate limit, a key's revocation and an idempotency key; and
`kill -9` of one replica (supervisor, worker and Envoy) in the middle of a generation loses no ledger
row and gives its reservation back within one lease."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from ulid import ULID

from tests.fakes import environment
from tests.fakes.base import Recorded, Reply
from tests.fakes.openai import FakeOpenAI
from tests.support.checks import assert_error
from tests.support.gateway import GatewayProcess
from tests.support.stores import store_env

ADMIN_TOKEN = "mg_admin_replicas-test-token"
MODEL, PRICE_MICROS = "openai/dall-e-2", 16_000  # at 256x256, catalog
LEASE_S = 3.0  # MG_RESERVATION_LEASE_S and MG_IDEMPOTENCY_LEASE_S: a dead replica's leases lapse soon
UPSTREAM_DELAY_S = 0.4  # every fake answer: long enough that concurrent requests overlap
HOLD = "HOLD"  # a prompt with it is answered only once `released` is set


class HeldOpenAI(FakeOpenAI):
    """The OpenAI fake, holding its answer to prompts with HOLD while `released` is clear: a
    generation the test knows to be in flight upstream for as long as it needs. Set (nothing held)
    until a test clears it."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.released.set()

    def reset(self) -> None:
        super().reset()
        self.released.set()

    def handle(self, request: Recorded) -> Reply:
        if isinstance(request.json, dict) and HOLD in str(request.json.get("prompt", "")):
            self.released.wait(60)
        return super().handle(request)

    def calls(self, prompt: str) -> int:
        """Generation requests that reached the provider with this prompt."""
        prompts = [r.json.get("prompt") for r in self.generation_requests() if isinstance(r.json, dict)]
        return prompts.count(prompt)


@dataclass
class Replicas:
    gateways: list[GatewayProcess]
    fake: HeldOpenAI
    postgres_url: str

    def admin(self, method: str, path: str, body: Any = None, replica: int = 0) -> Any:
        response = httpx.request(
            method,
            f"{self.gateways[replica].http_url}{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json=body,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def project(self, budget_usd: str | None = None, rpm: int | None = None) -> tuple[str, str, str]:
        """A new project (through replica 0's admin API) and a key for it: name, key, key id."""
        name = f"replicas-{ULID()}"
        fields: dict[str, Any] = {"name": name}
        if budget_usd is not None:
            fields["budget_usd"] = budget_usd
        if rpm is not None:
            fields["rpm"] = rpm
        self.admin("POST", "/v1/admin/projects", fields)
        created = self.admin("POST", "/v1/admin/keys", {"project": name})
        return name, created["key"], created["record"]["id"]

    def generate(
        self, replica: int, key: str, prompt: str, headers: dict[str, str] | None = None, timeout: float = 60
    ) -> httpx.Response:
        body = {"model": MODEL, "prompt": prompt, "size": "256x256", "response_format": "b64_json"}
        return self.gateways[replica].generate(body, key, headers=headers, timeout=timeout)

    def spend(self, project: str, replica: int = 0) -> tuple[int, int]:
        """(spent, reserved) in micro-dollars, as the admin API shows them."""
        shown = self.admin("GET", f"/v1/admin/projects/{project}", replica=replica)
        return int(shown["spent_micros"]), int(shown["reserved_micros"])

    def in_flight(self, project: str) -> list[dict[str, Any]]:
        """The project's generations running now on any replica (their live reservations)."""
        generations = self.admin("GET", "/v1/admin/inflight").get("generations", [])
        return [g for g in generations if g["project"] == project]

    def ledger(self, project: str, replica: int = 0) -> list[dict[str, Any]]:
        page = self.admin("GET", f"/v1/admin/ledger?project={project}&page_size=500", replica=replica)
        assert not page.get("next_page_token")
        return list(page.get("entries", []))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    with ExitStack() as running, HeldOpenAI().running() as fake:
        assert isinstance(fake, HeldOpenAI)
        fake.delay_s = UPSTREAM_DELAY_S
        env = running.enter_context(store_env("postgres+redis"))
        shared = {
            **env,
            **environment(fake),
            "MG_WORKERS": "1",  # three gateways on a 2-core machine
            "MG_ADMIN_TOKEN": ADMIN_TOKEN,
            "MG_RESERVATION_LEASE_S": str(LEASE_S),
            "MG_IDEMPOTENCY_LEASE_S": str(LEASE_S),
        }
        gateways = [GatewayProcess(root / f"replica-{n}", dict(shared)) for n in range(3)]
        for gateway in gateways:
            running.callback(gateway.stop)
        with ThreadPoolExecutor(3) as pool:  # at once, as an orchestrator starts replicas
            list(pool.map(lambda gateway: gateway.start(), gateways))
        yield Replicas(gateways, fake, env["MG_POSTGRES_URL"])
        fake.released.set()  # nothing held past the module


def test_the_spend_cap_holds_across_replicas(replicas: Replicas) -> None:
    """50 concurrent requests, round-robin over the three, against a cap that allows ten images."""
    name, key, _ = replicas.project(budget_usd="0.16")
    prompt = f"a lighthouse {ULID()}"
    highest = [0]  # spent + reserved, sampled from the database while the requests run
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(replicas.postgres_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT s.spent_micros + s.reserved_micros FROM spend s JOIN projects p "
                    "ON p.id = s.project_id WHERE p.name = %s",
                    (name,),
                ).fetchone()
                highest[0] = max(highest[0], int(row[0]) if row else 0)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(lambda i: replicas.generate(i % 3, key, prompt), range(50)))
    finally:
        stop.set()
        watcher.join(10)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(402) == 40, statuses
    for refused in (r for r in responses if r.status_code == 402):
        assert_error(refused, 402, "BUDGET_EXCEEDED")
    assert replicas.fake.calls(prompt) == 10  # a refused request never reached the provider
    assert replicas.spend(name) == (10 * PRICE_MICROS, 0)
    assert 0 < highest[0] <= 10 * PRICE_MICROS
    entries = replicas.ledger(name)
    assert sorted(e["request_id"] for e in entries) == sorted(
        r.headers["x-request-id"] for r in responses if r.status_code == 200
    )
    assert {(e["outcome"], e["cost_micros"]) for e in entries} == {("ok", str(PRICE_MICROS))}


def test_the_rate_limit_holds_across_replicas(replicas: Replicas) -> None:
    """rpm 6, and 15 requests at once, five to each replica: a limit counted per replica would
    let all 15 through; the shared one lets exactly 6 (GCRA: a minute's allowance at once, then one
    every 10 s, far longer than these requests take)."""
    name, key, _ = replicas.project(rpm=6)
    prompt = f"a kite {ULID()}"
    with ThreadPoolExecutor(15) as pool:
        responses = list(pool.map(lambda i: replicas.generate(i % 3, key, prompt), range(15)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 6 and statuses.count(429) == 9, statuses
    for refused in (r for r in responses if r.status_code == 429):
        assert_error(refused, 429, "RATE_LIMITED")
        assert int(refused.headers["retry-after"]) >= 1
    assert replicas.fake.calls(prompt) == 6
    assert len(replicas.ledger(name)) == 6
    # and the limit still holds on every replica
    for replica in range(3):
        assert_error(replicas.generate(replica, key, prompt), 429, "RATE_LIMITED")


def test_a_revoked_key_is_refused_by_every_replica_at_once(replicas: Replicas) -> None:
    """Keys are looked up in the store on every call (no cache): the first request after the
    revocation returns, on any replica, is refused, whichever way it was revoked."""
    name, by_cli, by_cli_id = replicas.project()
    by_api = replicas.admin("POST", "/v1/admin/keys", {"project": name})
    prompt = f"a harbour {ULID()}"
    for replica in range(3):
        assert replicas.generate(replica, by_cli, prompt).status_code == 200
        assert replicas.generate(replica, by_api["key"], prompt).status_code == 200
    # `mg keys revoke` writes to the store alone: no replica is told
    replicas.gateways[0].mg("keys", "revoke", by_cli_id)
    # the admin API of one replica: the others are not told either
    replicas.admin("POST", f"/v1/admin/keys/{by_api['record']['id']}/revoke", replica=1)
    for replica in range(3):
        assert_error(replicas.generate(replica, by_cli, prompt), 401, "UNAUTHENTICATED")
        assert_error(replicas.generate(replica, by_api["key"], prompt), 401, "UNAUTHENTICATED")
    assert replicas.fake.calls(prompt) == 6
    assert len(replicas.ledger(name)) == 6


def test_one_idempotency_key_sent_to_two_replicas_at_once_runs_once(replicas: Replicas) -> None:
    name, key, _ = replicas.project(budget_usd="1")
    pairs = [(0, 1), (1, 2), (2, 0)]
    for first, second in pairs:
        prompt = f"a tower {ULID()}"
        headers = {"Idempotency-Key": f"order-{ULID()}"}
        start = threading.Barrier(2)

        def send(
            replica: int, prompt: str = prompt, headers: dict[str, str] = headers, start: Any = start
        ) -> httpx.Response:
            start.wait(10)
            return replicas.generate(replica, key, prompt, headers=headers)

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(send, (first, second))
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json()  # the same image, id and created time
        assert a.json()["data"][0]["b64_json"]
        assert replicas.fake.calls(prompt) == 1, (first, second)
    entries = replicas.ledger(name)
    assert len(entries) == len(pairs) and all(e["cost_micros"] == str(PRICE_MICROS) for e in entries)
    assert replicas.spend(name) == (len(pairs) * PRICE_MICROS, 0)


def request_ids(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["request_id"] for entry in entries}


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a killed child not yet reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _swallow(call: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call()


def test_kill_9_of_a_replica_mid_generation_loses_no_ledger_row_and_frees_its_reservation(
    replicas: Replicas,
) -> None:
    """Replica 2 dies (supervisor, worker and Envoy at once) while it holds a generation upstream.
    What the docs promise (docs/api.md, "What is charged when" and "Idempotency keys"): its
    reservation lapses within one lease of its last renewal and gives the budget back; every ledger
    row already written stays; the other replicas' generations in flight finish and are charged; a
    retry with the dead call's idempotency key runs once, after the dead claim's lease. (The dead
    call itself has no ledger row and no charge: its worker died before settling it.)
    Runs last: it leaves one replica dead."""
    fake = replicas.fake
    capped, key, _ = replicas.project(budget_usd="0.064")  # four images
    steady, steady_key, _ = replicas.project()
    done = [replicas.generate(replica, key, f"a bridge {ULID()}") for replica in range(3)]
    assert [r.status_code for r in done] == [200] * 3
    written = request_ids(replicas.ledger(capped))
    assert written == {r.headers["x-request-id"] for r in done}

    fake.released.clear()
    doomed, doomed_key = f"{HOLD} the doomed one {ULID()}", {"Idempotency-Key": f"crash-{ULID()}"}
    held_prompts = [f"{HOLD} a survivor {ULID()}" for _ in range(2)]
    survivors: list[httpx.Response] = []
    threads = [
        threading.Thread(target=_swallow, args=(lambda: replicas.generate(2, key, doomed, doomed_key),)),
        *(
            threading.Thread(
                target=lambda replica=replica, prompt=prompt: survivors.append(
                    replicas.generate(replica, steady_key, prompt)
                )
            )
            for replica, prompt in enumerate(held_prompts)
        ),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while not all(fake.calls(p) == 1 for p in (doomed, *held_prompts)):
            assert time.monotonic() < deadline, "the held calls never reached the provider"
            time.sleep(0.05)
        (held,) = replicas.in_flight(capped)
        assert int(held["reserved_micros"]) == PRICE_MICROS
        assert replicas.spend(capped) == (3 * PRICE_MICROS, PRICE_MICROS)
        # the cap is full while the doomed call holds its reservation
        assert_error(replicas.generate(0, key, f"a pier {ULID()}"), 402, "BUDGET_EXCEEDED")

        dead = replicas.gateways[2]
        processes = [dead.process.pid, *dead.children()] if dead.process else []
        assert len(processes) == 3  # the supervisor, its one worker and Envoy
        dead.crash()
        killed = time.monotonic()
        assert not any(_running(pid) for pid in processes)
    finally:
        fake.released.set()  # the survivors' provider answers now
    for thread in threads:
        thread.join(30)
    # the other replicas' generations in flight at the kill finished and were charged
    assert sorted(r.status_code for r in survivors) == [200, 200]
    assert request_ids(replicas.ledger(steady)) == {r.headers["x-request-id"] for r in survivors}
    assert replicas.spend(steady) == (2 * PRICE_MICROS, 0)

    # the dead replica's reservation lapses within one lease of its last renewal (the kill is later)
    while replicas.spend(capped, replica=1)[1] != 0:
        assert time.monotonic() - killed < LEASE_S + 2, "the dead replica's reservation outlived its lease"
        time.sleep(0.1)
    assert not replicas.in_flight(capped)
    # no row written before the kill is lost, and the dead call left none and no charge
    assert request_ids(replicas.ledger(capped)) == written
    assert replicas.spend(capped) == (3 * PRICE_MICROS, 0)

    # the budget is back: a retry of the dead call, with its idempotency key, on another replica runs
    # once (the dead claim lapsed with its lease) and takes the last image the cap allows
    retry = replicas.generate(0, key, doomed, doomed_key)
    assert retry.status_code == 200, retry.text
    assert "x-mg-idempotent-replay" not in retry.headers
    assert fake.calls(doomed) == 2  # the dead replica's call, and the retry's
    entries = replicas.ledger(capped, replica=1)
    assert request_ids(entries) == written | {retry.headers["x-request-id"]}
    assert held["request_id"] not in request_ids(entries)
    assert replicas.spend(capped) == (4 * PRICE_MICROS, 0)
    again = replicas.generate(1, key, doomed, doomed_key)
    assert again.headers["x-mg-idempotent-replay"] == "true" and again.json() == retry.json()
    assert fake.calls(doomed) == 2
