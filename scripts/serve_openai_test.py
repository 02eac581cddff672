#!/usr/bin/env python3
"""`spotlight serve` against the official `openai` Python client (scripts/test.sh installs it).

Starts the server (cpu backend, real SmolLM2, 127.0.0.1, any free port), then checks with the
client in strict response validation: chat and text completions, whole and streamed, greedy text
equal to `spotlight generate`, usage, and that errors raise the client's typed exceptions.

    python3 scripts/serve_openai_test.py target/debug/spotlight
"""
import json
import subprocess
import sys
import threading
import time
import urllib.request

import openai

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/spotlight"
ATTENTION = ["--dense-below", "0", "--window", "16", "--min-tokens", "8"]
QUESTION = "What is the capital of France?"


def start():
    p = subprocess.Popen([BIN, "serve", "--backend", "cpu", "--host", "127.0.0.1", "--port", "0",
                          "--slots", "2", "--max-queue", "1", "--ctx-size", "256", *ATTENTION],
                         stderr=subprocess.PIPE, text=True)
    addr = None
    for line in p.stderr:
        sys.stderr.write(line)
        if "listening on " in line:
            addr = line.split("listening on ")[1].strip()
            break
    threading.Thread(target=lambda: [sys.stderr.write(l) for l in p.stderr], daemon=True).start()
    for _ in range(1200):
        try:
            with urllib.request.urlopen(addr + "/health") as r:
                if r.status == 200:
                    return p, addr
        except Exception:
            time.sleep(0.1)
    raise SystemExit("the server never got ready")


def generate(*args, max_tokens):
    out = subprocess.run([BIN, "generate", "--backend", "cpu", "--temperature", "0", "--max-tokens",
                          str(max_tokens), *ATTENTION, *args], capture_output=True, text=True, check=True)
    return out.stdout.removesuffix("\n")


def main():
    server, addr = start()
    try:
        client = openai.OpenAI(base_url=addr + "/v1", api_key="unused", max_retries=0,
                               _strict_response_validation=True)
        model = client.models.list().data[0].id

        want = generate("--chat", "--prompt", QUESTION, max_tokens=12)
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=12, temperature=0)
        assert r.choices[0].message.content == want, (r.choices[0].message.content, want)
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        chunks = list(client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=12, temperature=0,
            stream=True, stream_options={"include_usage": True}))
        assert len({c.id for c in chunks}) == 1
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == want, (text, want)
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens

        prompt = "The capital of France is"
        want = generate("--prompt", prompt, max_tokens=8)
        r = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
        assert prompt + r.choices[0].text == want, (r.choices[0].text, want)
        assert r.choices[0].finish_reason == "length"
        # The client's legacy Completion type has a non-null finish_reason, which streamed chunks
        # (OpenAI's too) leave null until the last: read this stream without strict validation.
        lenient = openai.OpenAI(base_url=addr + "/v1", api_key="unused", max_retries=0)
        text = "".join(c.choices[0].text for c in lenient.completions.create(
            model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True))
        assert prompt + text == want

        # Client mistakes raise the client's typed errors, streaming or not.
        for stream in (False, True):
            try:
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=1000, stream=stream)
                raise AssertionError("context overflow accepted")
            except openai.BadRequestError as e:
                assert e.code == "context_length_exceeded", e
        try:
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("unknown model accepted")
        except openai.NotFoundError as e:
            assert e.code == "model_not_found", e
        print(json.dumps({"serve_openai_test": "ok", "openai": openai.__version__}))
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0, "the server exits 0 on SIGTERM"


if __name__ == "__main__":
    main()
