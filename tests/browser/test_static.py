"""The static client's files: a Content-Security-Policy it can live with, no inline script, and the config."""

from __future__ import annotations

import re
from pathlib import Path

import requests

DIST = Path(__file__).resolve().parent.parent.parent / "frontend_dist"


def directives(policy: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def meta_csp() -> str:
    html = (DIST / "index.html").read_text()
    match = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert match, "index.html has no CSP meta tag"
    return match.group(1)


def test_index_html_has_only_external_scripts_and_a_strict_script_policy():
    html = (DIST / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "no scripts at all?"
    for attrs, body in scripts:
        assert "src=" in attrs and not body.strip(), f"inline script: {attrs} {body[:80]}"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler attribute"
    script_src = directives(meta_csp())["script-src"]
    assert "'self'" in script_src
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "https:", "data:"} & set(script_src)
    assert directives(meta_csp())["object-src"] == ["'none'"]


def test_every_module_is_plain_es_and_has_no_eval():
    files = sorted((DIST / "js").rglob("*.js"))
    assert {"api.js", "auth.js", "app.js", "ui.js"} <= {f.name for f in files}
    for path in files:
        text = path.read_text()
        assert "eval(" not in text and "new Function" not in text, path
        assert ".innerHTML" not in text, f"{path}: build DOM nodes, not HTML strings"


def test_production_config_is_a_placeholder_that_deployment_fills():
    code = [line for line in (DIST / "config.js").read_text().splitlines() if not line.startswith("//")]
    assert len(code) == 1, code
    assert re.fullmatch(r'window\.PROMPTCANVAS_CONFIG = \{ apiBaseUrl: "", clerkPublishableKey: "" \};', code[0])


def test_dev_web_server_sends_the_policy_and_the_stack_config(stack):
    page = requests.get(stack.web_url + "/", timeout=10)
    assert page.status_code == 200
    header = directives(page.headers["Content-Security-Policy"])
    assert "'unsafe-inline'" not in header["script-src"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    config = requests.get(stack.web_url + "/config.js", timeout=10)
    assert config.headers["Content-Type"].startswith("text/javascript")
    assert stack.api_url in config.text and stack.info["auth"]["token_url"] in config.text
    module = requests.get(stack.web_url + "/js/app.js", timeout=10)
    assert module.headers["Content-Type"].split(";")[0] in ("text/javascript", "application/javascript")
