"""The portal in real headless Chromium (Debian's chromium + chromium-driver, selenium): log in, upload a video and
a dub, see a contract violation for a bad dub, start a passthrough job (local store, in-process), see it complete,
play the preview (the video elements report durations) and download the result.

Screenshots of each page go to $PORTAL_SCREENSHOT_DIR when set (the README's docs/portal/*.png are made this way:
``PORTAL_SCREENSHOT_DIR=docs/portal pytest tests/portal/test_browser.py``), else to the test's temp dir."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import media_factory as mf
from tests.portal.conftest import PASSWORD
from tests.prefect_server import stop_process
from tests.s3server import free_port

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def portal_server(tmp_path_factory, users_file):
    """`lipline portal serve` as an operator starts it: local store, jobs in-process (embedded Prefect)."""
    base = tmp_path_factory.mktemp("portal-server")
    yield from _serve(base, free_port(), users_file, LIPLINE_STORE=str(base / "store"))


def _serve(base: Path, port: int, users_file: Path, **settings: str):
    """Run `lipline portal serve` on `port` with `settings` until the generator is closed; yields (url, store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "LIPLINE_"))}
    env.update({"LIPLINE_PORTAL_SECRET": "browser-test-secret", "LIPLINE_PORTAL_RUNNER": "in-process",
                "LIPLINE_PORTAL_USERS": str(users_file), **settings})
    log = open(base / "portal.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "lipline"), "portal", "serve", "--port", str(port)],
                            env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (base / "portal.log").read_text()
        time.sleep(0.2)
    yield url, base / "store"
    stop_process(proc, timeout=10)
    log.close()


@pytest.fixture(scope="module")
def s3_portal_server(tmp_path_factory, users_file, s3_server):
    """The portal on an S3 store (SeaweedFS), its bucket's CORS letting the portal's page PUT parts and read ETags."""
    import boto3

    port = free_port()
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1")
    client.put_bucket_cors(Bucket=s3_server.bucket, CORSConfiguration={"CORSRules": [{
        "AllowedOrigins": [f"http://127.0.0.1:{port}"], "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"]}]})
    yield from _serve(tmp_path_factory.mktemp("portal-s3"), port, users_file, **s3_server.env(),
                      LIPLINE_STORE=f"s3://{s3_server.bucket}/portal-browser",
                      LIPLINE_PORTAL_SECRET="s3-browser-test-secret")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed: apt-get install chromium chromium-driver (make install "
                    "does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    # a click that submits the check waits for the next page; on two busy cores that can exceed selenium's 120 s
    driver.command_executor._client_config.timeout = 600
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, message=what)


def _text_naming(driver, element_id: str, name: str) -> str | bool:
    """The text of the element `element_id` once it names `name` (False before, and while the page is replaced)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.ID, element_id)
        text = found[0].text if found else ""
    except StaleElementReferenceException:
        return False
    return text if name in text else False


def test_operator_round_trip_in_chromium(portal_server, browser, media, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, store = portal_server
    shots = Path(os.environ.get("PORTAL_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    d = browser

    # log in (any page without a session sends the browser here)
    d.get(url + "/")
    assert d.current_url == url + "/login"
    d.find_element(By.ID, "username").send_keys("alice")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.save_screenshot(str(shots / "login.png"))
    d.find_element(By.ID, "login").click()
    _wait(d, lambda d: d.find_elements(By.ID, "jobs"), 10, "the jobs page after login")

    # a new job: upload the video and a telephone-band dub (bad), with progress bars
    d.find_element(By.ID, "new-job").click()
    _wait(d, lambda d: d.find_elements(By.ID, "uploads"), 10, "the new-job page")
    phone = mf.write_audio(tmp_path / "phone.wav", mf.speech_like(3.0, sr=8000), sr=8000)

    def upload(role: str, path: Path) -> None:
        d.find_element(By.ID, f"file-{role}").send_keys(str(path))
        _wait(d, lambda d: "uploaded" in d.find_element(By.ID, f"status-{role}").text, 60, f"upload of {role}")
        assert d.execute_script(f"return document.getElementById('progress-{role}').value") == 1

    upload("video", media.video)
    upload("audio", phone)
    d.find_element(By.ID, "check-faces").click()  # passthrough dry run: no face rules
    d.find_element(By.ID, "check-button").click()
    report = _wait(d, lambda d: d.find_elements(By.ID, "reports"), 90, "the check's reports")[0].text
    assert "audio.sample_rate: observed 8000 Hz, expected >= 16000 Hz" in report
    assert "telephone-band audio cannot be restored" in report
    d.save_screenshot(str(shots / "check.png"))

    # replace the dub, check again, start a passthrough job
    upload("audio", media.dub)
    d.find_element(By.ID, "check-faces").click()
    d.find_element(By.ID, "check-button").click()
    # the first check's reports stay on the page until the second's replace them: wait for the new file's name
    report = _wait(d, lambda d: _text_naming(d, "reports", media.dub.name), 90, "the second check's reports")
    assert "audio.sample_rate" not in report
    Select(d.find_element(By.NAME, "engine")).select_by_visible_text("passthrough")
    Select(d.find_element(By.NAME, "x264_preset")).select_by_visible_text("ultrafast")
    d.find_element(By.ID, "start").click()
    _wait(d, lambda d: "/jobs/" in d.current_url, 15, "the job page")
    job_id = d.current_url.rsplit("/", 1)[1]

    # watch: the job page polls and reloads itself when the job is done
    # (seconds on an idle machine; minutes when Prefect's embedded API first starts on two cores shared with others)
    _wait(d, lambda d: d.find_elements(By.ID, "result"), 400,
          f"the completed job's preview (job page: {d.find_element(By.TAG_NAME, 'main').text[:300]!r})")
    assert d.find_element(By.ID, "job-state").text == "Completed"
    durations = _wait(d, lambda d: d.execute_script(
        "const a = document.getElementById('original'), b = document.getElementById('result');"
        "return a.readyState >= 1 && b.readyState >= 1 ? [a.duration, b.duration] : null;"), 30, "video metadata")
    assert durations[0] == pytest.approx(12.0, abs=0.2) and durations[1] == pytest.approx(12.4, abs=0.3)
    d.find_element(By.ID, "play-both").click()
    _wait(d, lambda d: d.execute_script("return document.getElementById('result').currentTime") > 0.2, 20,
          "the result playing")
    d.save_screenshot(str(shots / "job.png"))

    # download the deliverable: the same bytes as in the store
    d.find_element(By.ID, "download-final-mp4").click()
    target = d.downloads / f"{job_id}-final.mp4"
    _wait(d, lambda d: target.exists() and target.stat().st_size > 0, 30, "the download")
    stored = store / job_id / "final.mp4"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(stored.read_bytes()).hexdigest()

    d.get(url + "/")
    row = d.find_element(By.CSS_SELECTOR, f'tr[data-job="{job_id}"]').text
    assert "Completed" in row and "alice" in row
    d.save_screenshot(str(shots / "jobs.png"))


def test_presigned_multipart_upload_to_s3_in_chromium(s3_portal_server, s3_server, browser, media, tmp_path):
    """On an S3 store the page PUTs the file's parts straight to S3 (presigned, CORS) and the portal completes and
    sniffs the upload: a mislabelled file is refused on the page, the real video lands under the server's key."""
    import s3fs
    from selenium.webdriver.common.by import By

    url, _ = s3_portal_server
    d = browser
    d.get(url + "/")
    assert d.current_url == url + "/login"
    d.find_element(By.ID, "username").send_keys("alice")
    d.find_element(By.ID, "password").send_keys(PASSWORD)
    d.find_element(By.ID, "login").click()
    _wait(d, lambda d: d.find_elements(By.ID, "jobs"), 10, "the jobs page after login")
    d.find_element(By.ID, "new-job").click()
    box = _wait(d, lambda d: d.find_elements(By.ID, "uploads"), 10, "the new-job page")[0]
    assert box.get_attribute("data-mode") == "multipart"
    draft = box.get_attribute("data-draft")

    fake = tmp_path / "fake.mp4"
    fake.write_bytes(media.dub.read_bytes())
    d.find_element(By.ID, "file-video").send_keys(str(fake))
    status = _wait(d, lambda d: "refused" in d.find_element(By.ID, "status-video").get_attribute("class")
                   and d.find_element(By.ID, "status-video").text, 60, "the refusal of a mislabelled video")
    assert status.startswith("fake.mp4: the name says an MP4/MOV container (.mp4) but the content is a WAV file")

    d.find_element(By.ID, "file-video").send_keys(str(media.video))
    _wait(d, lambda d: "uploaded" in d.find_element(By.ID, "status-video").text, 60,
          f"the multipart upload (status: {d.find_element(By.ID, 'status-video').text!r})")
    assert d.execute_script("return document.getElementById('progress-video').value") == 1
    fs = s3fs.S3FileSystem(key=s3_server.access_key, secret=s3_server.secret_key,
                           client_kwargs={"endpoint_url": s3_server.endpoint})
    stored = fs.cat(f"{s3_server.bucket}/portal-browser/_portal/uploads/{draft}/video.mp4")
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(media.video.read_bytes()).hexdigest()
