"""`mtkit serve`: the API contract, equality with `mtkit translate`, batching, bad requests,
the bounded queue, the API key, CORS and draining on SIGTERM. Servers run on 127.0.0.1 in child
processes, on a tiny model of the reversal task."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import run_cli
from synthetic import WORDS
from mtkit.serve.client import ServerProcess, call

LINES = [
    "w1 w2 w3", "w4 w5 w6 w7 w8", "", "w9", "w10 w11 w12 w13 w14 w15 w16 w17", "  w3   w2  ",
    "unknown words here", "w1 w1 w1 w1 w1 w1", "émoji 🙂 and ünïcode", "w19 w18",
]


@pytest.fixture(scope="module")
def server(tiny_run):
    with ServerProcess("--model", f"tiny={tiny_run}") as running:
        yield running


def offline(run, tmp_path, lines, *flags):
    """What `mtkit translate` prints for ``lines``."""
    source = tmp_path / "input.txt"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return run_cli("translate", "--model", run, source, *flags).stdout


def sentences(n, seed, length=(3, 8)):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*length))) for _ in range(n)]


# -- the contract --------------------------------------------------------------------------


def test_health_models_page_and_openapi(server, tiny_run):
    health = server.call("/health")
    assert health.status == 200 and health.json() == {"status": "ready", "models": ["tiny"]}
    listing = server.call("/models").json()
    assert listing["default"] == "tiny" and listing["limits"]["max_lines"] == 64
    (info,) = listing["models"]
    assert info["name"] == "tiny" and (info["source_language"], info["target_language"]) == ("en", "fr")
    assert info["model"]["attention"] == "luong" and info["model"]["hidden"] == 64
    assert info["parameters"] > 10_000
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert info["best_dev_bleu"] == round(max(m["dev_bleu"] for m in metrics), 2)
    page = server.call("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'<textarea id="source"' in page.body and b"/static/app.js" in page.body
    assert b"http" not in server.call("/static/app.js").body  # nothing fetched from elsewhere
    schema = server.call("/openapi.json").json()
    body_schema = schema["paths"]["/translate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body_schema["properties"]) == {"text", "model", "beam", "nbest", "alpha", "attention"}
    assert server.call("/docs").status == 200


def test_translate_answer_shape(server):
    reply = server.call("/translate", {"text": ["w1 w2 w3 w4", "", "w5 w6"], "beam": 3, "nbest": 2, "attention": True})
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert set(answer) == {"translations", "nbest", "attention", "model", "milliseconds", "batch"}
    assert len(answer["translations"]) == 3 and answer["translations"][1] == ""
    assert answer["model"] == "tiny" and answer["milliseconds"] > 0
    assert answer["batch"]["requests"] >= 1 and answer["batch"]["lines"] >= 3
    assert [len(n) for n in answer["nbest"]] == [2, 0, 2]
    assert answer["nbest"][0][0]["text"] == answer["translations"][0]
    assert answer["nbest"][0][0]["score"] >= answer["nbest"][0][1]["score"]
    first, empty, _ = answer["attention"]
    assert empty is None
    assert first["source"] == ["w1", "w2", "w3", "w4", "<eos>"]
    assert first["target"][-1] == "<eos>" and len(first["weights"]) == len(first["target"])
    for row in first["weights"]:
        assert len(row) == len(first["source"]) and sum(row) == pytest.approx(1, abs=0.01)
    plain = server.call("/translate", {"text": ["w1 w2"]}).json()
    assert set(plain) == {"translations", "model", "milliseconds", "batch"}


@pytest.mark.parametrize("options", [
    {}, {"beam": 5}, {"beam": 4, "nbest": 3, "alpha": 1.0},
], ids=["greedy", "beam5", "beam4-nbest3"])
def test_outputs_equal_mtkit_translate(server, tiny_run, tmp_path, options):
    flags = [f"--{k}={v}" for k, v in options.items()]
    answer = server.call("/translate", {"text": LINES, **options}).json()
    expected = offline(tiny_run, tmp_path, LINES, *flags, "--format", "jsonl")
    records = [json.loads(line) for line in expected.splitlines()]
    assert answer["translations"] == [r["hypotheses"][0]["text"] if r["hypotheses"] else "" for r in records]
    if "nbest" in options:  # scores too, to the last bit
        assert answer["nbest"] == [r["hypotheses"] for r in records]
    if not options:  # byte for byte, as written to a file
        assert "".join(t + "\n" for t in answer["translations"]) == offline(tiny_run, tmp_path, LINES)


def test_concurrent_requests_are_batched_and_still_equal(server, tiny_run, tmp_path):
    lines = sentences(24, seed=5)
    expected = offline(tiny_run, tmp_path, lines).splitlines()
    before = server.call("/stats").json()
    busy = threading.Thread(target=server.call, args=("/translate", {"text": sentences(64, 6, (20, 30)), "beam": 8}))
    busy.start()  # keeps the decoder busy while the single-sentence requests queue up behind it
    _wait_for(lambda: server.call("/stats").json()["decoding"])
    assert server.call("/health").status == 200  # decoding runs off the event loop
    with ThreadPoolExecutor(len(lines)) as pool:
        answers = list(pool.map(lambda line: server.call("/translate", {"text": [line]}).json(), lines))
    busy.join()
    assert [a["translations"][0] for a in answers] == expected
    assert max(a["batch"]["requests"] for a in answers) > 1
    after = server.call("/stats").json()
    per_decode = {int(k): v - before["requests_per_decode"].get(k, 0) for k, v in after["requests_per_decode"].items()}
    assert sum(n * count for n, count in per_decode.items()) == len(lines) + 1
    assert max(n for n, count in per_decode.items() if count) > 1


# -- bad requests ----------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = {
    "invalid JSON": (b'{"text": ["a"', JSON, 400, "invalid_json", None),
    "invalid UTF-8": (b'{"text": ["\xff\xfe"]}', JSON, 400, "invalid_utf8", None),
    "not an object": (b'["a", "b"]', JSON, 422, "invalid_request", None),
    "text a string": (b'{"text": "a"}', JSON, 422, "invalid_request", None),
    "text of numbers": (b'{"text": [1, 2]}', JSON, 422, "invalid_request", None),
    "beam a string": (b'{"text": ["a"], "beam": "5"}', JSON, 422, "invalid_request", None),
    "beam a float": (b'{"text": ["a"], "beam": 2.5}', JSON, 422, "invalid_request", None),
    "attention not bool": (b'{"text": ["a"], "attention": 1}', JSON, 422, "invalid_request", None),
    "alpha NaN": (b'{"text": ["a"], "alpha": NaN}', JSON, 422, "invalid_request", None),
    "unknown field": (b'{"text": ["a"], "beams": 5}', JSON, 422, "invalid_request", None),
    "no text": (b'{"beam": 2}', JSON, 422, "invalid_request", None),
    "empty list": (b'{"text": []}', JSON, 422, "invalid_request", None),
    "too many lines": (json.dumps({"text": ["w1"] * 65}).encode(), JSON, 413, "too_many_lines", "max_lines"),
    "100,000-character line": (json.dumps({"text": ["w1 " * 33_334]}).encode(), JSON, 413, "line_too_long", "max_chars"),
    "huge body": (b'{"text": ["' + b"a" * 2_000_000 + b'"]}', JSON, 413, "body_too_large", "max_body_bytes"),
    "line break": (b'{"text": ["w1\\nw2"]}', JSON, 422, "line_break", None),
    "lone surrogate": (b'{"text": ["\\ud800"]}', JSON, 422, "invalid_text", None),
    "unknown model": (b'{"text": ["a"], "model": "nope"}', JSON, 422, "unknown_model", None),
    "beam 0": (b'{"text": ["a"], "beam": 0}', JSON, 422, "invalid_request", None),
    "beam 10,000": (b'{"text": ["a"], "beam": 10000}', JSON, 422, "beam_too_large", "max_beam"),
    "nbest > beam": (b'{"text": ["a"], "beam": 2, "nbest": 3}', JSON, 422, "nbest_exceeds_beam", None),
    "form content type": (b'{"text": ["a"]}', {"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", None),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_json_error(server, name):
    data, headers, status, code, limit = BAD_REQUESTS[name]
    reply = server.call("/translate", data=data, headers=headers, method="POST")
    assert reply.status == status, reply.body
    error = reply.json()
    assert error["error"] == code and error["message"]
    if limit:
        assert error["limit"] == limit and error["allowed"] > 0
    assert server.call("/translate", {"text": ["w1 w2"]}).status == 200  # still serving


def test_wrong_method_and_path_get_json_errors(server):
    assert server.call("/translate").status == 405
    missing = server.call("/nothing-here")
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    assert server.call("/static/../../etc/passwd").status == 404
    other_host = server.call("/models", headers={"Host": "attacker.example"})
    assert other_host.status == 421  # DNS rebinding: a loopback server answers to localhost only


def test_no_cors_headers_unless_asked(server):
    reply = server.call("/models", headers={"Origin": "http://example.org"})
    assert reply.status == 200 and "access-control-allow-origin" not in reply.headers


# -- the queue, the key, SIGTERM -------------------------------------------------------------


def test_queue_full_answers_503_with_retry_after(tiny_run):
    with ServerProcess("--model", tiny_run, "--max-queue", "1", "--max-batch", "1") as server:
        busy = threading.Thread(target=server.call, args=("/translate", {"text": sentences(64, 7, (20, 30)), "beam": 8}))
        busy.start()
        _wait_for(lambda: server.call("/stats").json()["decoding"])
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(server.call, "/translate", {"text": ["w1 w2"]})
            _wait_for(lambda: server.call("/stats").json()["queued_requests"] == 1)
            refused = server.call("/translate", {"text": ["w3 w4"]})
            assert refused.status == 503, refused.body
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"] == "queue_full" and refused.json()["limit"] == "max_queue"
            assert queued.result().status == 200
        busy.join()
        assert server.call("/translate", {"text": ["w3 w4"]}).status == 200
        assert server.call("/stats").json()["rejected_queue_full"] == 1


def test_request_timeout_answers_504(tiny_run):
    with ServerProcess("--model", tiny_run, "--timeout", "0.2", "--max-beam", "64") as server:
        slow = server.call("/translate", {"text": sentences(64, 8, (30, 40)), "beam": 64})  # seconds of work
        assert slow.status == 504, slow.body
        assert slow.json()["error"] == "timeout" and slow.json()["limit"] == "timeout"
        _wait_for(lambda: not server.call("/stats").json()["decoding"])
        assert server.call("/translate", {"text": ["w1 w2"]}).status == 200


def test_api_key_and_cors_origin(tiny_run):
    origin = "http://localhost:3000"
    with ServerProcess("--model", tiny_run, "--cors-origin", origin, env={"MTKIT_API_KEY": "s3cret"}) as server:
        assert server.call("/health").status == 200  # open: for load balancers
        for path in ("/models", "/stats", "/", "/openapi.json"):
            assert server.call(path).status == 401, path
        refused = server.call("/translate", {"text": ["w1"]})
        assert refused.status == 401 and refused.json()["error"] == "unauthorized"
        assert server.call("/translate", {"text": ["w1"]}, headers={"Authorization": "Bearer wrong"}).status == 401
        assert server.call("/translate", {"text": ["w1"]}, headers={"Authorization": "Bearer s3cret"}).status == 200
        assert server.call("/translate", {"text": ["w1"]}, headers={"X-API-Key": "s3cret"}).status == 200
        assert server.call("/models", headers={"Authorization": "Basic dXNlcjpzM2NyZXQ="}).status == 200  # user:s3cret
        assert server.call("/", headers={"X-API-Key": "s3cret"}).status == 200
        page = server.call("/")
        assert page.headers["www-authenticate"].startswith("Basic")  # a browser asks for the key
        preflight = server.call("/translate", method="OPTIONS", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        assert preflight.status == 200 and preflight.headers["access-control-allow-origin"] == origin
        other = server.call("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_binding_beyond_loopback_needs_a_key(tiny_run):
    result = run_cli("serve", "--model", tiny_run, "--host", "0.0.0.0", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("mtkit: error: --host 0.0.0.0") and "--api-key" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_model_and_busy_port_fail_with_one_line(server, tmp_path):
    result = run_cli("serve", "--model", tmp_path, "--port", "0", check=False)
    assert result.returncode == 1 and "not a run directory" in result.stderr
    assert result.stderr.count("\n") == 1
    port = server.url.rsplit(":", 1)[1].strip("/")
    result = run_cli("serve", "--model", tmp_path, "--port", port, check=False)
    assert result.returncode != 0 and result.stderr.count("\n") == 1


def test_missing_extra_says_how_to_install(tiny_run):
    code = (
        "import sys; sys.modules['fastapi'] = None; from mtkit.cli import main; "
        f"main(['serve', '--model', {str(tiny_run)!r}])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == "mtkit: error: mtkit serve needs FastAPI and uvicorn: pip install 'mtkit[serve]'\n"


def test_sigterm_finishes_requests_in_flight_then_exits(tiny_run, tmp_path):
    work = [sentences(32, seed, (20, 30)) for seed in (11, 12)]
    server = ServerProcess("--model", tiny_run)
    with ThreadPoolExecutor(len(work)) as pool:
        replies = [pool.submit(server.call, "/translate", {"text": lines, "beam": 4}) for lines in work]
        _wait_for(lambda: server.call("/stats").json()["decoding"])
        assert server.stop() == 0
        answers = [r.result() for r in replies]
    assert [a.status for a in answers] == [200, 200]
    expected = offline(tiny_run, tmp_path, work[0] + work[1], "--beam", "4").splitlines()
    assert answers[0].json()["translations"] + answers[1].json()["translations"] == expected
    assert "stopped after 2 requests" in "".join(server.log)
    with pytest.raises(OSError):
        call(server.url, "/health", timeout=5)


def _wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)
