"""The web playground at / in a real headless browser (Debian's chromium through chromedriver,
driven by Selenium) against a real stack: text, vision and latent services behind a gateway with
API keys, and the http role in front.

The page must load without a console error, stream a completion into the page (the text grows
chunk by chunk and ends as the same completion the API gives for that seed), dream on an image
sent through the file input (previews, then the result), sample the latent space, and show the
API's own error message when a call is refused.

`pytest tests/http/test_playground.py --playground-screenshot docs/images/playground.png` also
remakes the screenshot in the docs (`make playground-screenshot`).
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from genserve.testing import JobStack, ServerProcess
from tests.conftest import MODEL_STORE, ROOT, TEST_TEXT_ENV, start_role
from tests.jobs.conftest import WORKER_ENV

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]'): the playground test skips"
)
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

API_KEY = "playground-key"
TEXT_MODEL = "shakespeare-lstm"
LATENT_MODEL = "mnist-vae-16d"
VISION_ENV = {
    "GENSERVE_VISION_CONCURRENCY": "1",
    "GENSERVE_VISION_DREAM_MAX_SIZE": "160",
    "GENSERVE_VISION_PREVIEW_MAX_SIZE": "128",
}
WIDTH = 1280
# Every role stops at once on SIGTERM: nothing balances load in front of them here.
NO_NOTICE = {"GENSERVE_SHUTDOWN_NOTICE_SECONDS": "0"}


def browser_paths() -> tuple[str, str] | str:
    """(chromium, chromedriver) from PATH, or why they cannot be used."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
        install = "`make chromium` installs Debian's chromium and chromium-driver"
        return f"no headless browser: {missing} not on PATH ({install})"
    return browser, driver


@dataclass
class Stack:
    gateway: ServerProcess
    http: ServerProcess


@pytest.fixture(scope="module")
def paths() -> tuple[str, str]:
    found = browser_paths()
    if isinstance(found, str):
        print(f"\nSKIP tests/http/test_playground.py: {found}")
        pytest.skip(found)
    return found


@pytest.fixture(scope="module")
def stack(paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The text, vision and latent services, and the job system (Redis, a gateway routing to them
    all, a worker), with the http role in front."""
    work = tmp_path_factory.mktemp("playground")
    log_dir = work / "logs"
    roles = {
        "text": {**NO_NOTICE, **TEST_TEXT_ENV, "GENSERVE_TEXT_MODELS": TEXT_MODEL},
        "vision": {**NO_NOTICE, **VISION_ENV},
        "latent": {**NO_NOTICE, "GENSERVE_LATENT_MODELS": LATENT_MODEL},
    }
    # Processes start at once. Each child is bound to die with the thread that started it
    # (PR_SET_PDEATHSIG), so the pool's threads are kept until the processes have stopped.
    pool = ThreadPoolExecutor(len(roles))
    starting = {role: pool.submit(start_role, role, log_dir, env) for role, env in roles.items()}
    backends = [future.result() for future in starting.values() if not future.exception()]
    try:
        if len(backends) < len(roles):
            raise next(error for future in starting.values() if (error := future.exception()))
        addresses = {f"GENSERVE_{role.upper()}_ADDR": future.result().address for role, future in starting.items()}
        with JobStack(
            MODEL_STORE,
            {"tester": API_KEY},
            gateway_env={**NO_NOTICE, **addresses},
            worker_env={**NO_NOTICE, **WORKER_ENV},
            work_dir=work,
        ) as jobs:
            assert jobs.gateway is not None
            worker = pool.submit(jobs.start_worker)
            http = start_role("http", log_dir, {**NO_NOTICE, "GENSERVE_HTTP_GATEWAY_ADDR": jobs.gateway.address})
            try:
                worker.result()
                yield Stack(jobs.gateway, http)
            finally:
                http.stop()
    finally:
        list(pool.map(ServerProcess.stop, backends))
        pool.shutdown()


@pytest.fixture(scope="module")
def browser(paths: tuple[str, str], stack: Stack) -> Iterator[Any]:
    chromium, chromedriver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        # The key is in the page's localStorage before its script first runs, as after a visit.
        remember = f"localStorage.setItem('genserve.apiKey', {API_KEY!r})"
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": remember})
        driver.get(f"{stack.http.url}/")
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 30, what: str = "") -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda _: condition())
    except TimeoutException:
        errors = [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".error") if element.text]
        raise AssertionError(f"timed out waiting for {what}; errors shown in the page: {errors}") from None


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def shown_errors(driver: Any) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, ".error") if element.is_displayed()]


def a_photo(path: Path, size: tuple[int, int] = (128, 96)) -> Path:
    """A small PNG with edges and colour for the dream to work on."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    pixels = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 7), 128 + 100 * np.sin((x + y) / 13)], axis=-1)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


def set_value(driver: Any, selector: str, value: object) -> None:
    element = driver.find_element(By.CSS_SELECTOR, selector)
    driver.execute_script(
        "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", element, str(value)
    )


def test_the_page_loads_its_models_without_a_console_error(browser: Any, stack: Stack) -> None:
    assert browser.title == "genserve playground"
    wait(browser, lambda: browser.find_element(By.ID, "health").text == "serving", what="the health pill")
    options = lambda selector: [o.text for o in browser.find_elements(By.CSS_SELECTOR, f"{selector} option")]  # noqa: E731
    wait(browser, lambda: options("#text-model") == [TEXT_MODEL], what="the text models")
    wait(browser, lambda: options("#latent-model") == [LATENT_MODEL], what="the latent models")
    assert shown_errors(browser) == [] and console_errors(browser) == []
    # The page is served with a policy that keeps it to its own origin.
    page = httpx.get(f"{stack.http.url}/", timeout=10)
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_text_streams_into_the_page_and_ends_as_the_full_completion(browser: Any, stack: Stack) -> None:
    max_tokens, seed, prompt = 300, 17, "ROMEO:\n"
    set_value(browser, "#text-max-tokens", max_tokens)
    set_value(browser, "#text-seed", seed)
    # Every change to the output is recorded in the page, so the growth is seen however fast it is.
    browser.execute_script(
        """
        const output = document.getElementById('text-output');
        window.textLengths = [];
        new MutationObserver(() => window.textLengths.push(output.textContent.length))
            .observe(output, {childList: true, characterData: true, subtree: true});
        """
    )
    browser.find_element(By.ID, "text-generate").click()
    output = browser.find_element(By.ID, "text-output")
    wait(browser, lambda: output.get_attribute("data-state") == "done", timeout=60, what="the completion")
    lengths = browser.execute_script("return window.textLengths")
    growing = [length for length in lengths if length > len(prompt)]
    assert len(set(growing)) >= 3, f"the text should arrive in several pieces, saw lengths {lengths}"
    assert growing == sorted(growing), "the text only grows"
    reference = httpx.post(
        f"{stack.http.url}/v1/completions",
        json={"prompt": prompt, "max_tokens": max_tokens, "seed": seed, "temperature": 0.8, "top_p": 0.95},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ).json()["choices"][0]["text"]
    assert len(reference) == max_tokens
    assert output.get_attribute("textContent") == prompt + reference
    assert "finished (length)" in browser.find_element(By.ID, "text-status").text
    assert console_errors(browser) == [] and shown_errors(browser) == []


def test_a_temperature_sweep_streams_one_column_per_temperature(browser: Any) -> None:
    set_value(browser, "#text-max-tokens", 40)
    set_value(browser, "#sweep-temperatures", "0.2, 1.0, 1.6")
    browser.find_element(By.ID, "sweep-run").click()
    columns = lambda: browser.find_elements(By.CSS_SELECTOR, "#sweep-output pre")  # noqa: E731
    wait(
        browser,
        lambda: len(columns()) == 3 and all(len(c.get_attribute("textContent")) == 7 + 40 for c in columns()),
        what="three full sweep columns",
    )
    titles = [title.text for title in browser.find_elements(By.CSS_SELECTOR, "#sweep-output h3")]
    assert titles == ["temperature 0.2", "temperature 1.0", "temperature 1.6"]
    assert len({column.get_attribute("textContent") for column in columns()}) == 3
    wait(browser, lambda: browser.find_element(By.ID, "sweep-run").is_enabled(), what="the sweep to finish")


def test_a_dream_of_an_uploaded_image_shows_previews_then_the_result(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    photo = a_photo(tmp_path_factory.mktemp("playground") / "photo.png")
    browser.find_element(By.ID, "photo").send_keys(str(photo))
    set_value(browser, "#dream-octaves", 2)
    set_value(browser, "#dream-steps", 3)
    set_value(browser, "#dream-seed", 5)
    browser.find_element(By.ID, "dream-run").click()
    result = browser.find_element(By.ID, "vision-result")
    natural = lambda element: browser.execute_script(  # noqa: E731
        "return [arguments[0].complete, arguments[0].naturalWidth, arguments[0].naturalHeight]", element
    )
    wait(browser, lambda: natural(result)[1] > 0, timeout=60, what="the dream's result image")
    assert natural(result) == [True, 128, 96]
    preview = browser.find_element(By.ID, "vision-preview")
    assert int(preview.get_attribute("data-count")) >= 1 and natural(preview)[1] > 0
    assert browser.execute_script("return document.getElementById('vision-progress').value") == 1
    assert console_errors(browser) == [] and shown_errors(browser) == []


def test_latent_samples_a_grid_interpolates_and_applies_a_concept(browser: Any) -> None:
    set_value(browser, "#latent-n", 8)
    set_value(browser, "#latent-seed", 3)
    browser.find_element(By.ID, "latent-sample").click()
    grid = lambda: browser.find_elements(By.CSS_SELECTOR, "#latent-grid img")  # noqa: E731
    wait(browser, lambda: len(grid()) == 8, what="eight samples")
    browser.find_element(By.ID, "latent-interpolate").click()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#latent-strip img")) == 10, what="the strip")
    after = browser.find_element(By.ID, "concept-after")
    wait(browser, lambda: bool(after.get_attribute("src")), what="a concept applied to sample A")
    assert console_errors(browser) == [] and shown_errors(browser) == []


def test_a_style_transfer_job_shows_its_progress_then_its_result(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The photo chosen for the dream is the content; a style image is added.
    style = a_photo(tmp_path_factory.mktemp("playground") / "style.png", size=(48, 48))
    browser.find_element(By.ID, "style").send_keys(str(style))
    set_value(browser, "#job-iterations", 12)
    set_value(browser, "#job-size", 40)
    browser.find_element(By.ID, "job-submit").click()
    result = browser.find_element(By.ID, "job-result")
    width = lambda element: browser.execute_script("return arguments[0].naturalWidth", element)  # noqa: E731
    wait(browser, lambda: width(result) > 0, timeout=60, what="the job's result image")
    assert width(result) == 40 and width(browser.find_element(By.ID, "job-preview")) == 40
    status = browser.find_element(By.ID, "job-status").text
    assert ": succeeded · step 12 of 12" in status, status
    assert browser.execute_script("return document.getElementById('job-progress').value") == 1
    assert console_errors(browser) == [] and shown_errors(browser) == []


def test_a_style_preview_of_the_photo_and_the_style_image(browser: Any) -> None:
    set_value(browser, "#style-steps", 4)
    set_value(browser, "#style-size", 64)
    browser.find_element(By.ID, "style-run").click()  # both images were chosen above
    result = browser.find_element(By.ID, "vision-result")
    width = lambda: browser.execute_script("return arguments[0].naturalWidth", result)  # noqa: E731
    wait(browser, lambda: width() > 0, timeout=60, what="the style preview's result")
    assert width() == 64 and "done" in browser.find_element(By.ID, "vision-status").text
    assert console_errors(browser) == [] and shown_errors(browser) == []


def test_an_api_error_is_shown_in_the_page_and_the_key_is_kept(browser: Any) -> None:
    def enter_key(value: str) -> None:
        key = browser.find_element(By.ID, "api-key")
        browser.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", key, value
        )

    enter_key("wrong-key")  # the model lists are asked for again, with it
    error = browser.find_element(By.ID, "text-error")
    wait(browser, error.is_displayed, what="the error")
    assert error.text.startswith("401: ") and "API key" in error.text, error.text
    browser.find_element(By.ID, "text-generate").click()
    wait(browser, lambda: browser.find_element(By.ID, "text-generate").is_enabled(), what="the refused request")
    assert browser.find_element(By.ID, "text-error").text.startswith("401: ")
    assert browser.execute_script("return localStorage.getItem('genserve.apiKey')") == "wrong-key"
    enter_key(API_KEY)
    wait(browser, lambda: shown_errors(browser) == [], what="the errors to clear with the right key")
    console_errors(browser)  # the refused requests' 401s, logged by the browser itself


def test_a_screenshot_of_the_playground(browser: Any, request: pytest.FixtureRequest) -> None:
    target = request.config.getoption("--playground-screenshot")
    if not target:
        pytest.skip("the screenshot is remade with --playground-screenshot PATH (make playground-screenshot)")
    showcase(browser)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, height + 140)  # the window's frame is counted in its size
    time.sleep(0.5)
    path = Path(target) if Path(target).is_absolute() else ROOT / target
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(browser.get_screenshot_as_png())
    with Image.open(io.BytesIO(path.read_bytes())) as shot:
        assert shot.width >= WIDTH - 20, shot.size


def showcase(browser: Any) -> None:
    """Real results in every section for the screenshot: a photo dreamed on and painted in a
    painting's style by a job, a sweep, a longer completion and a bigger sample grid."""
    from genserve.common.packages import PackageFetchError
    from genserve.vision.samples import sample_image

    cache, folder = ROOT / "var" / "packages", ROOT / "var" / "playground"
    folder.mkdir(parents=True, exist_ok=True)
    photo, style = folder / "chelsea.png", folder / "style.png"
    sample_image("chelsea", cache).resize((160, 107)).save(photo)
    try:
        painting = sample_image("scream", cache)  # Debian's darknet package, where apt-get can fetch it
    except PackageFetchError:
        painting = sample_image("hubble", cache)
    painting.resize((128, 160)).save(style)
    browser.find_element(By.ID, "photo").send_keys(str(photo))
    browser.find_element(By.ID, "style").send_keys(str(style))
    set_value(browser, "#dream-octaves", 3)
    set_value(browser, "#dream-steps", 8)
    set_value(browser, "#style-steps", 20)
    set_value(browser, "#style-size", 160)
    browser.find_element(By.ID, "dream-run").click()
    result = browser.find_element(By.ID, "vision-result")
    wait(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", result) > 0, timeout=120)
    set_value(browser, "#job-iterations", 80)
    set_value(browser, "#job-size", 160)
    browser.find_element(By.ID, "job-submit").click()
    set_value(browser, "#text-max-tokens", 160)
    browser.find_element(By.ID, "sweep-run").click()
    wait(browser, lambda: browser.find_element(By.ID, "sweep-run").is_enabled(), timeout=60)
    set_value(browser, "#text-max-tokens", 420)
    set_value(browser, "#text-seed", 17)
    browser.find_element(By.ID, "text-generate").click()
    output = browser.find_element(By.ID, "text-output")
    wait(browser, lambda: output.get_attribute("data-state") == "done", timeout=60)
    set_value(browser, "#latent-n", 24)
    browser.find_element(By.ID, "latent-sample").click()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#latent-grid img")) == 24)
    browser.find_element(By.ID, "latent-interpolate").click()
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#latent-strip img")) == 10)
    job = browser.find_element(By.ID, "job-result")
    wait(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", job) > 0, timeout=180)
    browser.execute_script("window.scrollTo(0, 0)")
