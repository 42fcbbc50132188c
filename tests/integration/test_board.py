"""The web board in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): ``hpcplat server`` started as a command against the sandbox's Slurm and munge, a
catalog of our own, ``hpcplat board`` minting the login link."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpcplat.catalog.intent import RunIntent
from hpcplat.catalog.service import Catalog
from hpcplat.runner import run
from hpcplat.sandbox import Sandbox
from hpcplat.server.client import Client, ServerError

pytestmark = pytest.mark.sandbox

HPCPLAT = Path(sys.executable).parent / "hpcplat"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SECRET_GROUP = "nogroup"  # exists on Debian; root is not in it
STEPS = 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    url: str
    env: dict[str, str]
    base: Path
    runs: dict[str, str]
    """a, b: root's runs (a with a finished job); secret: another user's restricted run."""
    job_id: str

    def login_link(self) -> str:
        result = run([str(HPCPLAT), "board"], timeout=60, env=self.env)
        link = result.stdout.strip()
        assert link.startswith(self.url + "/board/login?token="), result
        return link


def _submit_and_wait(env: dict[str, str], out: Path) -> str:
    job_id = run(
        ["sbatch", "--parsable", "--gres=gpu:1", "-o", str(out), "--wrap", "echo board-log-line; sleep 1"],
        timeout=30,
        env=env,
    ).stdout.strip()
    deadline = time.monotonic() + 90
    while run(["squeue", "-h", "-j", job_id], timeout=30, env=env, check=False).stdout.strip():
        if time.monotonic() > deadline:
            run(["scancel", job_id], timeout=30, env=env, check=False)
            pytest.fail(f"job {job_id} did not finish in 90 s")
        time.sleep(0.5)
    return job_id


def _seed(url: str, base: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    now = time.time()
    data = base / "data"
    data.mkdir()
    (data / "scan.txt").write_text("private\n")
    job_id = _submit_and_wait(env, base / "job.out")
    with Catalog.open(url) as catalog:
        catalog.register_dataset("board-secret", data, groups=[SECRET_GROUP], owner="nobody")
        runs = {}
        for key, lr in (("a", 0.1), ("b", 0.01)):
            runs[key] = catalog.record_intent(
                RunIntent(name=f"board-{key}", owner="root", team="vision", tags=["board"], params={"lr": lr})
            )
            points = [(0, s, "loss", 5.0 / (1 + s * lr) + (s % 7) * 0.01, now + s) for s in range(STEPS)]
            catalog.log_metrics(runs[key], points)
            catalog.log_metrics(runs[key], [(0, s, "acc", s / STEPS, now + s) for s in range(0, STEPS, 10)])
        catalog.confirm_submission(runs["a"], job_id)
        runs["secret"] = catalog.record_intent(
            RunIntent(
                name="board-secret-run", owner="nobody", team="nlp", datasets=[("board-secret", "latest")]
            )
        )
    return runs, job_id


@pytest.fixture(scope="module")
def world(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("board")
    catalog_url = f"sqlite:///{base / 'catalog.db'}"
    slurm_env = {**os.environ, **sandbox.env()}
    runs, job_id = _seed(catalog_url, base, slurm_env)
    port = _free_port()
    site = base / "hpcplat.toml"
    site.write_text(
        f"[catalog]\nurl = {json.dumps(catalog_url)}\n\n[server]\n"
        f"socket = {json.dumps(str(base / 'server.sock'))}\nport = {port}\n"
        f"munge_socket = {json.dumps(str(sandbox.layout.munge_socket))}\nadmins = []\n"
        "reconcile_interval_s = 0.5\n"
    )
    env = {**slurm_env, "HPCPLAT_CONFIG": str(site)}
    env.pop("HPCPLAT_CATALOG_URL", None)
    env.pop("HPCPLAT_BOARD_URL", None)
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen([str(HPCPLAT), "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"hpcplat server exited: {(base / 'server.log').read_text()}")
            try:
                Client(socket=str(base / "server.sock"), use_munge=False).whoami()
                break
            except ServerError:
                assert time.monotonic() < deadline, (base / "server.log").read_text()
                time.sleep(0.3)
        yield World(f"http://127.0.0.1:{port}", env, base, runs, job_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.fail("chromium and chromium-driver are needed (scripts/install-system-packages.sh)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        driver.get(world.login_link())
        assert driver.current_url.endswith("/board/runs"), driver.current_url
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, script: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for: {script}"
        time.sleep(0.2)


def _console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _status(url: str, cookie: str | None = None) -> int:
    headers = {"Cookie": f"hpcplat_board={cookie}"} if cookie else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# -- pages --------------------------------------------------------------------------------------


def test_runs_table_lists_runs_filters_and_hides_a_restricted_run(world: World, browser: Any) -> None:
    browser.get(f"{world.url}/board/runs")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)"
    )
    assert world.runs["a"] in rows and world.runs["b"] in rows
    assert world.runs["secret"] not in rows  # nobody's run used a dataset root may not read
    assert "board-secret-run" not in browser.page_source
    browser.get(f"{world.url}/board/runs?name=board-a&sort=name&order=asc")
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)"
    )
    assert rows == [world.runs["a"]]
    assert _console_errors(browser) == []


def test_run_page_draws_every_metric_and_shows_the_finished_job(world: World, browser: Any) -> None:
    browser.get(f"{world.url}/board/run?id={world.runs['a']}")
    _wait(browser, "return window.hpcplatBoard && window.hpcplatBoard.ready")
    charts = browser.execute_script(
        "return window.hpcplatBoard.charts.map(c => [c.metric, c.plot.data[0].length, c.total])"
    )
    assert sorted(c[0] for c in charts) == ["acc", "loss"]
    loss = next(c for c in charts if c[0] == "loss")
    assert loss[2] == STEPS and 1000 <= loss[1] <= 2000  # downsampled on the server
    assert browser.execute_script("return document.querySelectorAll('#charts canvas').length") == 2
    # The live reconcile loop brings the finished job's attempt in; the log tail is readable.
    deadline = time.monotonic() + 60
    while "completed" not in browser.find_element("css selector", ".timeline").text:
        assert time.monotonic() < deadline, browser.find_element("css selector", ".timeline").text
        time.sleep(1)
        browser.refresh()
    assert f"job {world.job_id}" in browser.page_source
    assert "board-log-line" in browser.find_element("id", "log").text
    assert _console_errors(browser) == []
    browser.save_screenshot(str(world.base / "run-page.png"))
    shot = os.environ.get("HPCPLAT_BOARD_SCREENSHOT")
    if shot:
        shutil.copyfile(world.base / "run-page.png", shot)


def test_compare_page_overlays_two_runs_and_highlights_params(world: World, browser: Any) -> None:
    a, b = world.runs["a"], world.runs["b"]
    browser.get(f"{world.url}/board/compare?run={a}&run={b}&metric=loss")
    _wait(browser, "return window.hpcplatBoard && window.hpcplatBoard.ready")
    series = browser.execute_script("return window.hpcplatBoard.charts[0].plot.series.length")
    assert series == 3  # x plus one line per run
    differing = browser.execute_script(
        "return [...document.querySelectorAll('table.compare tr.differs th')].map(t => t.textContent)"
    )
    assert "lr" in differing and "name" in differing
    assert _console_errors(browser) == []


def test_cluster_page_lists_the_nodes_and_their_gpus(world: World, browser: Any) -> None:
    browser.get(f"{world.url}/board/cluster")
    nodes = browser.execute_script(
        "return [...document.querySelectorAll('#nodes tr[data-node]')]"
        ".map(r => [r.dataset.node, r.querySelectorAll('.gpu').length])"
    )
    assert nodes == [["n1", 4], ["n2", 4], ["n3", 4], ["n4", 4]]
    assert _console_errors(browser) == []


# -- login and permissions ----------------------------------------------------------------------


def test_a_login_link_works_once_and_a_forged_one_not_at_all(world: World) -> None:
    link = world.login_link()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(link, timeout=30) as first:
        assert first.status == 200 and first.url.endswith("/board/runs")
    assert _status(link) == 401  # spent
    assert _status(f"{world.url}/board/login?token={uuid.uuid4().hex}") == 401  # forged
    assert _status(f"{world.url}/board/runs") == 401  # no session
    assert _status(f"{world.url}/board/runs", cookie="forged-session") == 401


def test_the_session_cookie_is_httponly_strict_and_random(world: World) -> None:
    request = urllib.request.Request(world.login_link())

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect()).open(request, timeout=30)
        pytest.fail("the login link should redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["Location"] == "runs"
        cookie = exc.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=" not in cookie
    session = cookie.split(";")[0].split("=", 1)[1]
    assert len(session) >= 40
    assert _status(f"{world.url}/board/run?id={world.runs['secret']}", cookie=session) == 403
    assert _status(f"{world.url}/board/series?run={world.runs['secret']}&metric=x", cookie=session) == 403
    assert _status(f"{world.url}/board/run?id={world.runs['a']}", cookie=session) == 200


def test_minting_a_link_needs_a_valid_credential(world: World) -> None:
    with pytest.raises(ServerError) as none:
        Client(url=world.url, use_munge=False).post("/board/api/links", {})
    assert none.value.status == 401


def test_pages_work_under_a_path_prefix(world: World, browser: Any) -> None:
    """Behind a proxy that strips ``/ood/hpcplat``: every link and script is relative, so the
    browser's view of the page (base URL with the prefix) needs nothing from the server."""
    html = urllib.request.urlopen(  # the server's answer has no absolute path in it
        urllib.request.Request(
            f"{world.url}/board/run?id={world.runs['a']}",
            headers={"Cookie": _session_cookie(browser)},
        ),
        timeout=30,
    ).read()
    assert b'href="/' not in html and b'src="/' not in html and b'action="/' not in html


def _session_cookie(browser: Any) -> str:
    cookie = browser.get_cookie("hpcplat_board")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    return f"hpcplat_board={cookie['value']}"


# -- the pieces, without a browser --------------------------------------------------------------


def test_lttb_keeps_the_ends_and_the_peaks() -> None:
    from hpcplat.server.board.data import lttb

    points = [(float(i), 100.0 if i == 31_337 else float(i % 10)) for i in range(100_000)]
    kept = lttb(points, 2000)
    assert len(kept) == 2000 and kept[0] == points[0] and kept[-1] == points[-1]
    assert (31_337.0, 100.0) in kept  # a one-point spike survives
    assert lttb(points[:10], 2000) == points[:10]


def test_a_token_is_spent_once_and_expires() -> None:
    from hpcplat.server.board.auth import TOKEN_TTL_S, Sessions
    from hpcplat.server.identity import Identity

    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    who = Identity(0, 0, "root", frozenset({"root"}), "munge")
    token = sessions.mint_token(who)
    session = sessions.redeem(token)
    assert session is not None and sessions.identity(session) == who
    assert sessions.redeem(token) is None
    late = sessions.mint_token(who)
    now[0] += TOKEN_TTL_S + 1
    assert sessions.redeem(late) is None
    sessions.end(session)
    assert sessions.identity(session) is None
