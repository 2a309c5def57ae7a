"""The web chat page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright; nothing is
downloaded): connect with a key, send a message with an attached image, watch the plan and task events,
see the output image, play an audio output, approve a waiting task, pick up an earlier conversation.
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from serve_harness import start_server

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the system chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serve-web"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    failures: list[str] = []
    page.on("pageerror", lambda error: failures.append(str(error)))
    page.on("requestfailed", lambda request: failures.append(f"{request.url}: {request.failure}"))
    page.goto(server.url + "/")
    page.fill("#key", server.key("webber"))
    page.click("#save-key")
    sync_api.expect(page.locator("#key-state")).to_have_text("connected")
    yield page
    assert not [f for f in failures if "ERR_ABORTED" not in f], failures  # blob downloads may be aborted on close
    context.close()


def test_send_an_image_see_the_plan_tasks_and_output(page, tmp_path):
    photo = tmp_path / "dark.png"
    Image.new("RGB", (40, 30), (10, 40, 70)).save(photo)
    page.fill("#message", "brighten this please")
    page.set_input_files("#attach", str(photo))
    sync_api.expect(page.locator("#attachments")).to_have_text("dark.png")
    page.click("#send")
    turn = page.locator(".turn").last
    sync_api.expect(turn.locator(".task[data-task='t1']")).to_have_attribute("data-status", "done", timeout=20_000)
    sync_api.expect(turn.locator("img.output")).to_be_visible(timeout=20_000)
    page.screenshot(path=str(tmp_path / "web-image.png"), full_page=True)
    assert turn.locator(".user").inner_text().startswith("brighten this please")
    assert "dark.png" in turn.locator(".user .sent").inner_text()
    assert turn.locator(".task[data-task='t1']").get_attribute("data-tool") == "stub-brighten"
    assert turn.get_attribute("data-status") == "done"
    # The image shown is the brightened one: read its pixels in the page.
    pixel = page.evaluate("""() => {
        const img = document.querySelector('.turn:last-child img.output');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        return [img.naturalWidth, img.naturalHeight, ...context.getImageData(1, 1, 1, 1).data.slice(0, 3)];
    }""")
    assert pixel == [40, 30, 70, 100, 130]
    href = turn.locator("a.download").get_attribute("href")
    assert href.startswith("blob:") and turn.locator("a.download").get_attribute("download").endswith(".png")
    assert (tmp_path / "web-image.png").stat().st_size > 10_000


def test_audio_plays_and_an_approval_is_given_from_the_page(page, tmp_path):
    page.fill("#message", "say hello as a tone")
    page.click("#send")
    turn = page.locator(".turn").last
    audio = turn.locator("audio.output")
    sync_api.expect(audio).to_have_count(1, timeout=20_000)
    played = page.evaluate("""async () => {
        const audio = document.querySelector('.turn:last-child audio.output');
        await audio.play();
        await new Promise((done) => setTimeout(done, 150));
        return {duration: audio.duration, time: audio.currentTime, error: audio.error && audio.error.code};
    }""")
    assert played["error"] is None and abs(played["duration"] - 0.25) < 0.01 and played["time"] > 0

    page.fill("#message", "post this to the board")
    page.click("#send")
    turn = page.locator(".turn").last
    sync_api.expect(turn.locator(".task[data-task='t1']")).to_have_attribute("data-status", "waiting", timeout=20_000)
    sync_api.expect(turn.locator("button.approve")).to_be_visible()
    page.screenshot(path=str(tmp_path / "web-approval.png"), full_page=True)
    turn.locator("button.approve").click()
    sync_api.expect(turn.locator(".task[data-task='t1']")).to_have_attribute("data-status", "done", timeout=20_000)
    sync_api.expect(turn.locator("pre.output")).to_have_text("posted: post this to the board")
    assert turn.get_attribute("data-status") == "done" and turn.locator("button.approve").count() == 0

    # Pick the conversation up again from the list: every turn comes back, with its outputs.
    page.click("#new-thread")
    sync_api.expect(page.locator(".turn")).to_have_count(0)
    page.locator("#threads li").first.click()
    sync_api.expect(page.locator(".turn")).to_have_count(2, timeout=20_000)
    sync_api.expect(page.locator(".turn").first.locator("audio.output")).to_have_count(1)
    sync_api.expect(page.locator(".turn").last.locator("pre.output")).to_have_text("posted: post this to the board")
    page.screenshot(path=str(tmp_path / "web-reopened.png"), full_page=True)


def test_a_wrong_key_is_told_and_nothing_is_listed(browser, server):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#key", "amk_" + "x" * 43)
    page.click("#save-key")
    sync_api.expect(page.locator("#key-state")).to_contain_text("invalid or revoked")
    assert page.locator("#threads li").count() == 0
    page.close()


def test_task_events_show_live_while_the_run_works(page):
    page.fill("#message", "slow 1.5")
    page.click("#send")
    task = page.locator(".turn").last.locator(".task[data-task='t1']")
    sync_api.expect(task).to_have_attribute("data-status", "running", timeout=10_000)  # before the run has ended
    assert page.locator(".turn").last.get_attribute("data-status") is None
    sync_api.expect(task).to_have_attribute("data-status", "done", timeout=20_000)
    sync_api.expect(page.locator(".turn").last.locator("pre.output")).to_have_text("slept")
