#!/usr/bin/env python3
"""End-to-end check of `flexrun serve` with the real `openai` client (Tools/serve-venv.sh).

Starts the server on a free loopback port and checks, printing one line per check:
  client     the models list, a chat completion, a streamed chat completion whose deltas
             concatenate to the non-streamed text, a completion; greedy responses equal the
             CLI's for the same prompt and template (`flexrun -p … [--chat] --temp 0`);
  robust     N requests (default 1,000) mixing valid, malformed and abandoned ones: every bad
             request gets a 4xx JSON error in OpenAI's shape, the server never dies, abandoned
             streams free their sequences (/metrics), RSS is flat from request 100 to the last;
  metrics    /metrics' token counter agrees with the tokens the clients received.
Exits non-zero on the first failed check, with one line saying what differed.

Usage: serve_check.py FLEXRUN [--model FILE] [--requests N]
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

FAILED = []


def check(name, ok, detail=""):
    print(f"serve-check: {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)
        raise SystemExit(f"serve-check: failed: {name}: {detail}")


def start(flexrun, model, extra):
    args = [flexrun, "serve", "--port", "0", "--parallel", "4", "--ctx", "512"] + extra
    if model:
        args += ["--model", model]
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1)), line.strip()
    p.kill()
    raise SystemExit(f"serve-check: the server did not start: {line.strip() or 'no output'}")


def raw(port, method, path, body=None, headers=None, timeout=60):
    """One request on a new connection: (status, parsed JSON or text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data.decode("utf-8", "replace")


def metrics(port):
    _, text = raw(port, "GET", "/metrics")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def cli(flexrun, model, args):
    cmd = [flexrun] + args + (["--model", model] if model else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.rstrip("\n")


def client_checks(flexrun, model, port):
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    models = [m.id for m in client.models.list().data]
    check("models list", len(models) == 1, f"{models}")
    model_id = models[0]
    question = "What is the capital of France? Answer in one sentence."
    chat = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": question}],
                                          temperature=0, max_tokens=40)
    text = chat.choices[0].message.content
    check("chat completion", bool(text) and chat.usage.completion_tokens > 0, repr(text))
    stream = client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": question}],
                                            temperature=0, max_tokens=40, stream=True)
    deltas, finish = [], None
    for chunk in stream:
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    check("streamed chat equals the non-streamed text", "".join(deltas) == text and finish == chat.choices[0].finish_reason,
          f"{''.join(deltas)!r} vs {text!r}")
    reference = cli(flexrun, model, ["-p", question, "--chat", "--temp", "0", "-n", "40"])
    check("greedy chat equals the CLI's", text == reference, f"{text!r} vs CLI {reference!r}")
    prompt = "The three primary colors are"
    comp = client.completions.create(model=model_id, prompt=prompt, temperature=0, max_tokens=24)
    reference = cli(flexrun, model, ["-p", prompt, "--temp", "0", "-n", "24"])
    check("greedy completion equals the CLI's", comp.choices[0].text == reference, f"{comp.choices[0].text!r} vs CLI {reference!r}")
    # Multi-turn: the server renders the whole conversation with the model's template.
    turns = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a color."}]
    multi = client.chat.completions.create(model=model_id, messages=turns, temperature=0, max_tokens=16)
    check("multi-turn chat", bool(multi.choices[0].message.content), repr(multi.choices[0].message.content))
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        check("unknown model is refused", False, "no error")
    except openai.NotFoundError as e:
        check("unknown model is refused", e.status_code == 404, str(e)[:120])
    return model_id


def abandon(port, body, path="/v1/chat/completions"):
    """Starts a stream, reads its first event and hangs up."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall(f"POST {path} HTTP/1.1".encode() + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    got = b""
    while b"data:" not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    s.close()


def robustness(port, model_id, n, context=512):
    rng = random.Random(7)
    long_prompt = "word " * (context * 2)
    bad = [
        ("POST", "/v1/chat/completions", b"{not json"),
        ("POST", "/v1/chat/completions", b""),
        ("POST", "/v1/chat/completions", json.dumps({"messages": "hello"}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": 5, "content": "x"}]}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": []}).encode()),
        ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": long_prompt}]}).encode()),
        ("POST", "/v1/completions", json.dumps({"prompt": 42}).encode()),
        ("POST", "/v1/completions", json.dumps({"prompt": "x", "n": 3}).encode()),
        ("POST", "/v1/completions", json.dumps({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}).encode()),
        ("POST", "/v1/completions", b"[1, 2, 3]"),
        ("POST", "/v1/completions", b"x" * (2 << 20)),
        ("GET", "/v1/chat/completions", None),
        ("GET", "/v1/nowhere", None),
        ("DELETE", "/v1/models", None),
    ]
    counts = {"valid": 0, "bad": 0, "abandoned": 0}
    rss = {}
    for i in range(1, n + 1):
        kind = rng.random()
        if kind < 0.25:
            body = {"model": model_id, "messages": [{"role": "user", "content": f"Say a number: {i}"}], "max_tokens": 2,
                    "temperature": 0.7, "seed": i}
            status, reply = raw(port, "POST", "/v1/chat/completions", json.dumps(body).encode())
            check(f"request {i} (valid)", status == 200 and "choices" in reply, f"{status} {str(reply)[:100]}") if status != 200 else None
            counts["valid"] += 1
        elif kind < 0.35:
            abandon(port, {"messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 200, "stream": True})
            counts["abandoned"] += 1
        else:
            method, path, body = rng.choice(bad)
            status, reply = raw(port, method, path, body)
            ok = 400 <= status < 500 and isinstance(reply, dict) and isinstance(reply.get("error"), dict) \
                and isinstance(reply["error"].get("message"), str) and "type" in reply["error"]
            if not ok:
                check(f"request {i} ({method} {path} {str(body)[:60]})", False, f"{status} {str(reply)[:160]}")
            counts["bad"] += 1
        if i in (100, n):
            rss[i] = metrics(port)["flexrun_resident_bytes"]
    check(f"{n} mixed requests", True, f"{counts['valid']} valid, {counts['bad']} bad (each a 4xx JSON error), {counts['abandoned']} abandoned")
    # Abandoned streams free their sequences: nothing runs once the clients are gone.
    deadline = time.time() + 30
    m = metrics(port)
    while (m["flexrun_sequences_running"] > 0 or m["flexrun_requests_queued"] > 0) and time.time() < deadline:
        time.sleep(0.2)
        m = metrics(port)
    check("abandoned streams free their sequences", m["flexrun_sequences_running"] == 0 and m["flexrun_kv_pages_in_use"] == 0,
          f"running {m['flexrun_sequences_running']:.0f}, KV pages {m['flexrun_kv_pages_in_use']:.0f}")
    growth = rss[n] - rss[100]
    check("RSS flat from request 100 on", growth <= 8 << 20, f"{rss[100] / 2**20:.1f} MiB → {rss[n] / 2**20:.1f} MiB")


def abandoned_stream_ends_at_once(port, model_id):
    """A counting prompt runs its whole token limit when read to the end; hung up after the first
    event, it must stop within a few tokens, not run the limit out."""
    body = {"model": model_id, "prompt": "1, 2, 3, 4, 5, 6, 7,", "max_tokens": 400, "temperature": 0}
    status, reply = raw(port, "POST", "/v1/completions", json.dumps(body).encode())
    full = reply["usage"]["completion_tokens"]
    check("the counting prompt runs its whole limit", full == 400, f"{full} tokens")
    before = metrics(port)["flexrun_generated_tokens_total"]
    abandon(port, dict(body, stream=True), path="/v1/completions")
    deadline = time.time() + 10
    while metrics(port)["flexrun_sequences_running"] > 0 and time.time() < deadline:
        time.sleep(0.05)
    spent = metrics(port)["flexrun_generated_tokens_total"] - before
    check("a stream hung up on stops at once", spent < 100, f"{spent:.0f} of 400 tokens generated")


def metric_agreement(port, model_id):
    before = metrics(port)["flexrun_generated_tokens_total"]
    got = 0
    for i in range(4):
        status, reply = raw(port, "POST", "/v1/completions", json.dumps(
            {"model": model_id, "prompt": f"Count: {i},", "max_tokens": 12, "temperature": 0}).encode())
        got += reply["usage"]["completion_tokens"]
    after = metrics(port)["flexrun_generated_tokens_total"]
    check("/metrics counts the tokens clients received", after - before == got, f"{after - before:.0f} vs {got}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("flexrun")
    ap.add_argument("--model")
    ap.add_argument("--requests", type=int, default=1000)
    a = ap.parse_args()
    server, port, banner = start(a.flexrun, a.model, [])
    print("serve-check: " + banner, flush=True)
    try:
        model_id = client_checks(a.flexrun, a.model, port)
        metric_agreement(port, model_id)
        abandoned_stream_ends_at_once(port, model_id)
        robustness(port, model_id, a.requests)
        check("the server is still up", server.poll() is None and raw(port, "GET", "/health")[0] == 200)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    # An API key, when set, is required on /v1/*, and /health stays open.
    server, port, _ = start(a.flexrun, a.model, ["--api-key", "sesame"])
    try:
        status, reply = raw(port, "GET", "/v1/models")
        check("a missing API key is refused", status == 401 and reply["error"]["code"] == "invalid_api_key", f"{status}")
        status, _ = raw(port, "GET", "/v1/models", headers={"Authorization": "Bearer sesam"})
        check("a wrong API key is refused", status == 401, f"{status}")
        status, _ = raw(port, "GET", "/v1/models", headers={"Authorization": "Bearer sesame"})
        check("the right API key is let in", status == 200, f"{status}")
        check("/health needs no key", raw(port, "GET", "/health")[0] == 200)
    finally:
        server.terminate()
        server.wait(timeout=20)
    print("serve-check: all passed", flush=True)


if __name__ == "__main__":
    main()
