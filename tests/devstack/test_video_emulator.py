"""The Flux emulator speaks Together's asynchronous video API (``/v2/videos``): jobs that
take emulated time, real playable clips, model capability checks, failed jobs, expiring URLs,
and the official ``together`` SDK's ``videos.create`` / ``videos.retrieve``."""

from __future__ import annotations

import base64
import csv
import io

import av
import pytest
import requests
from PIL import Image

from devstack.prompts import PARTI_PROMPTS
from devstack.video_emulator import VIDEOS_PATH
from tests.polling import wait_for

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
PIXVERSE = "pixverse/pixverse-v5"  # first+last keyframes, 360x360 exists


def _prompts() -> list[str]:
    with PARTI_PROMPTS.open(encoding="utf-8", newline="") as fh:
        return [row["Prompt"] for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


PROMPT = next(p for p in _prompts() if p.isascii() and 20 < len(p) < 200)


@pytest.fixture
def fast(flux):
    """The emulator with video jobs that take 0.3 real seconds."""
    flux.configure(time_scale=100.0, video_render_seconds=30.0)
    return flux


def submit(flux, **body):
    return requests.post(flux.url + VIDEOS_PATH, json=body, headers=AUTH, timeout=10)


def retrieve(flux, job_id):
    return requests.get(f"{flux.url}{VIDEOS_PATH}/{job_id}", headers=AUTH, timeout=10).json()


def done(flux, job_id):
    return wait_for(lambda: (j := retrieve(flux, job_id))["status"] in ("completed", "failed") and j, 10)


def frames_of(data: bytes) -> list[Image.Image]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_image() for f in container.decode(video=0)]


def png(colour: tuple[int, int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(("fmt", "codec"), [("MP4", "h264"), ("WEBM", "vp9")])
def test_a_job_runs_asynchronously_and_ends_with_a_playable_clip(fast, fmt, codec):
    created = submit(fast, model=PIXVERSE, prompt=PROMPT, width=360, height=360, output_format=fmt)
    assert created.status_code == 200
    job = created.json()
    assert set(job) == {"id", "object", "model", "status", "created_at"}
    assert (job["object"], job["model"], job["status"]) == ("video", PIXVERSE, "in_progress")
    finished = done(fast, job["id"])
    assert finished["status"] == "completed"
    assert finished["size"] == "360x360" and finished["seconds"] == "5"
    assert finished["outputs"]["cost"] > 0
    clip = requests.get(finished["outputs"]["video_url"], timeout=10)
    assert clip.status_code == 200
    with av.open(io.BytesIO(clip.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        assert stream.codec_context.width == stream.codec_context.height
    frames = frames_of(clip.content)
    assert len(frames) >= 8
    assert frames[0].tobytes() != frames[-1].tobytes()  # something moves


def test_the_first_keyframe_is_the_first_frame(fast):
    job = submit(
        fast,
        model=PIXVERSE,
        prompt=PROMPT,
        width=360,
        height=360,
        frame_images=[{"input_image": png((250, 0, 0)), "frame": "first"}],
    ).json()
    clip = requests.get(done(fast, job["id"])["outputs"]["video_url"], timeout=10).content
    red, green, blue = frames_of(clip)[0].resize((1, 1)).getpixel((0, 0))
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "google/veo-3.0", "prompt": PROMPT, "width": 360, "height": 360}, "width"),
        ({"model": "minimax/hailuo-02", "prompt": PROMPT, "seconds": "7"}, "seconds"),
        ({"model": "openai/sora-2", "prompt": PROMPT, "fps": 24}, "fps"),
        ({"model": "google/veo-3.0", "prompt": PROMPT}, None),  # accepted: defaults
        ({"model": "no/such-model", "prompt": PROMPT}, "model"),
        ({"model": "black-forest-labs/FLUX.1-schnell", "prompt": PROMPT}, "model"),
        (
            {"model": "google/veo-3.0", "prompt": PROMPT, "reference_images": ["https://x.invalid/a.png"]},
            "reference_images",
        ),
        ({"model": "Wan-AI/Wan2.2-I2V-A14B", "prompt": PROMPT}, "frame_images"),
        (
            {
                "model": "google/veo-3.0",
                "prompt": PROMPT,
                "frame_images": [{"input_image": png((1, 2, 3)), "frame": "last"}],
            },
            "frame_images",
        ),
        (
            {"model": PIXVERSE, "prompt": PROMPT, "frame_images": [{"input_image": "bm90IGFuIGltYWdl", "frame": 0}]},
            "frame_images",
        ),
        ({"model": "google/veo-3.0"}, "prompt"),
    ],
)
def test_models_and_capabilities_are_checked_as_together_does(fast, body, param):
    answer = submit(fast, **body)
    if param is None:
        assert answer.status_code == 200
        return
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_kling_takes_no_prompt_and_vidu_takes_reference_images(fast):
    assert (
        submit(fast, model="kwaivgI/kling-2.1-pro", frame_images=[{"input_image": png((0, 0, 200))}]).status_code == 200
    )
    ref = fast.url + "/v1/models"  # not an image: the reference is fetched and refused
    assert submit(fast, model="vidu/vidu-2.0", prompt=PROMPT, reference_images=[ref]).status_code == 400


def test_failed_jobs_and_expired_urls(fast):
    failed = submit(fast, model=PIXVERSE, prompt=PROMPT + " __VIDEO_FAIL__").json()
    answer = done(fast, failed["id"])
    assert answer["status"] == "failed" and answer["error"]["code"] and "outputs" not in answer

    fast.configure(video_url_ttl_seconds=10.0)  # 0.1 real seconds
    ok = submit(fast, model=PIXVERSE, prompt=PROMPT, width=360, height=360).json()
    url = done(fast, ok["id"])["outputs"]["video_url"]
    wait_for(lambda: requests.get(url, timeout=10).status_code == 403, 5, what="the URL expires")
    fresh = retrieve(fast, ok["id"])["outputs"]["video_url"]
    assert fresh != url and requests.get(fresh, timeout=10).status_code == 200


def test_submits_are_authenticated_rate_limited_and_faulted(fast):
    assert (
        requests.post(fast.url + VIDEOS_PATH, json={"model": PIXVERSE, "prompt": PROMPT}, timeout=10).status_code == 401
    )
    assert requests.get(f"{fast.url}{VIDEOS_PATH}/nope", headers=AUTH, timeout=10).status_code == 404
    fast.configure(rate_limit_per_minute=1)
    assert submit(fast, model=PIXVERSE, prompt=PROMPT).status_code == 200
    limited = submit(fast, model=PIXVERSE, prompt=PROMPT)
    assert limited.status_code == 429 and limited.headers["Retry-After"]
    fast.configure(rate_limit_per_minute=0, p500=1.0)
    assert submit(fast, model=PIXVERSE, prompt=PROMPT).status_code == 500
    assert fast.stats()["videos"]["submitted"] == 1


def test_official_together_sdk_creates_and_retrieves_videos(fast):
    from together import BadRequestError, Together

    client = Together(api_key=KEY, base_url=fast.url, max_retries=0)
    job = client.videos.create(
        model=PIXVERSE,
        prompt=PROMPT,
        width=360,
        height=360,
        seconds="5",
        fps=16,
        seed=7,
        negative_prompt="blurry",
        output_format="WEBM",
        media={"frame_images": [{"input_image": png((0, 200, 0)), "frame": "first"}]},
    )
    assert job.id and job.status == "in_progress" and job.model == PIXVERSE
    finished = wait_for(lambda: (j := client.videos.retrieve(job.id)).status == "completed" and j, 10)
    assert finished.outputs.cost > 0 and finished.size == "360x360"
    clip = requests.get(finished.outputs.video_url, timeout=10)
    assert clip.headers["Content-Type"] == "video/webm" and frames_of(clip.content)
    with pytest.raises(BadRequestError):
        client.videos.create(model="google/veo-3.0", prompt=PROMPT, width=360, height=360)


def test_video_settings_come_from_the_environment():
    from devstack.flux_emulator import EmulatorConfig

    config = EmulatorConfig.from_env(
        {
            "FLUX_EMULATOR_VIDEO_RENDER_SECONDS": "5",
            "FLUX_EMULATOR_VIDEO_URL_TTL_SECONDS": "60",
            "FLUX_EMULATOR_VIDEO_FAIL_RATE": "0.25",
        }
    )
    assert (config.video_render_seconds, config.video_url_ttl_seconds, config.pvideo_fail) == (5.0, 60.0, 0.25)
    with pytest.raises(ValueError):
        EmulatorConfig.from_env({"FLUX_EMULATOR_VIDEO_FAIL_RATE": "2"})
