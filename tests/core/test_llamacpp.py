"""llama-server as a managed process (real llama.cpp): start, health, stop without orphans, clear failures,
and the ``python -m core.llamacpp serve`` command end to end (export, manifest, per-request LoRA, Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import llamacpp
from core.llamacpp import LlamaServer, LlamaServerError, find_llama_server, get_json, port_is_free, post_json
from core.model import DEFAULT_ADAPTER_DIR, find_embedded_gguf

ROOT = Path(__file__).resolve().parents[2]
PROMPT = ("<|im_start|>system\nYou are a medical reasoning tutor.<|im_end|>\n"
          "<|im_start|>user\nWhat are the classic signs of appendicitis?<|im_end|>\n<|im_start|>assistant\n")


def processes_with(arg: str) -> list[int]:
    """Pids of live processes whose command line contains ``arg`` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if arg in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


# -- without the binary ------------------------------------------------------------------------------------


def test_binary_lookup_order(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv(llamacpp.BINARY_ENV, raising=False)
    assert find_llama_server() is None
    with pytest.raises(LlamaServerError, match="scripts/build_llama_server.sh"):
        llamacpp.require_llama_server()

    cached = llamacpp.cached_binary()
    assert cached == tmp_path / "cache" / "medstudy" / "llama.cpp-11434" / "bin" / "llama-server"
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    assert find_llama_server() == cached

    monkeypatch.setenv(llamacpp.BINARY_ENV, "/opt/other/llama-server")
    assert find_llama_server() == Path("/opt/other/llama-server")


def test_missing_model_is_refused_before_anything_starts(tmp_path):
    server = LlamaServer(model=tmp_path / "nope.gguf", port=0, binary=Path("/bin/false"))
    with pytest.raises(LlamaServerError, match="nope.gguf does not exist"):
        server.start()
    assert server.process is None


# -- with llama-server ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_bin() -> Path:
    binary = find_llama_server()
    if binary is None:
        pytest.skip("llama-server binary is missing: build it with `bash scripts/build_llama_server.sh` "
                    "(`make test` does) or set LLAMA_SERVER_BIN")
    return binary


@pytest.fixture(scope="module")
def lora_gguf(tmp_path_factory) -> Path:
    from core.gguf_export import export_lora_gguf

    out = tmp_path_factory.mktemp("llamacpp") / "medcot.lora.gguf"
    return export_lora_gguf(DEFAULT_ADAPTER_DIR, out, base_gguf=find_embedded_gguf()).path


@pytest.mark.slow
def test_a_bad_model_file_fails_with_the_log_tail_and_leaves_no_process(llama_bin, tmp_path):
    bad = tmp_path / "broken-model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    server = LlamaServer(model=bad, port=0, threads=1, parallel=1, log_path=tmp_path / "bad.log", binary=llama_bin)
    with pytest.raises(LlamaServerError) as info:
        server.start(timeout_s=30)
    message = str(info.value)
    assert "exited with code" in message and str(tmp_path / "bad.log") in message
    assert "broken-model.gguf" in message  # the tail of llama-server's own log, which names the file
    assert server.process is None and processes_with(str(bad)) == []
    assert port_is_free("127.0.0.1", server.port)


@pytest.mark.slow
def test_an_occupied_port_is_refused_without_starting(llama_bin, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = LlamaServer(model=find_embedded_gguf(), port=port, binary=llama_bin, log_path=tmp_path / "l.log")
        with pytest.raises(LlamaServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.process is None


@pytest.mark.slow
def test_server_serves_loras_unapplied_and_stops_its_process_group(llama_bin, lora_gguf, tmp_path):
    server = LlamaServer(model=find_embedded_gguf(), loras=[lora_gguf], port=0, parallel=2, threads=1,
                         ctx_per_slot=1024, log_path=tmp_path / "server.log", binary=llama_bin)
    with pytest.raises(RuntimeError, match="boom"), server:
        pid, port = server.pid, server.port
        assert get_json(f"{server.base_url}/health")[1] == {"status": "ok"}
        _, adapters = get_json(f"{server.base_url}/lora-adapters")
        assert [(a["id"], a["scale"], a["path"]) for a in adapters] == [(0, 0.0, str(lora_gguf))]
        base = server.complete(PROMPT, n_predict=12)["tokens"]
        tuned = server.complete(PROMPT, n_predict=12, lora={0: 1.0})["tokens"]
        assert base == server.complete(PROMPT, n_predict=12, lora={0: 0.0})["tokens"]  # no lora = scale 0
        assert tuned != base
        raise RuntimeError("boom")  # the context manager stops the server on an error too
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped (a zombie would still accept signal 0)
    assert port_is_free("127.0.0.1", port)
    server.stop()  # idempotent


# -- python -m core.llamacpp serve ------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_command_exports_serves_writes_the_manifest_and_stops_on_ctrl_c(llama_bin, tmp_path):
    from core.settings import load_settings

    work = tmp_path / "work"
    port = llamacpp.free_port()
    env = os.environ | {"MEDSTUDY_WORK_DIR": str(work), "MEDSTUDY_MODEL_CACHE": str(load_settings().model_cache_dir),
                        llamacpp.BINARY_ENV: str(llama_bin)}
    cmd = [sys.executable, "-m", "core.llamacpp", "serve", "--port", str(port), "--parallel", "2", "--threads", "1",
           "--ctx-per-slot", "1024", "--adapter", str(DEFAULT_ADAPTER_DIR)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    manifest_path = work / "serving" / "server.json"
    try:
        deadline = time.monotonic() + 120
        while not manifest_path.is_file():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no server.json after 120 s"
            time.sleep(0.2)
        manifest = json.loads(manifest_path.read_text())
        assert manifest["url"] == f"http://127.0.0.1:{port}/v1"
        assert manifest["server_url"] == f"http://127.0.0.1:{port}"
        lora = manifest["loras"][0]
        assert len(manifest["loras"]) == 1 and lora["id"] == 0 and lora["name"] == "smollm2-135m-medcot"
        assert lora["adapter_dir"] == str(DEFAULT_ADAPTER_DIR) and Path(lora["gguf"]).parent == work / "serving"
        server_pid = manifest["pid"]
        assert processes_with(f"--host 127.0.0.1 --port {port}") == [server_pid]

        # What the app does: the OpenAI-compatible API, the active adapter picked by its id in the manifest.
        status, models = get_json(f"{manifest['url']}/models")
        assert status == 200 and models["data"][0]["id"] == "smollm2-135m-instruct"
        answers: dict[str, str] = {}

        def ask(key: str, lora_field: list | None) -> None:
            body = {"model": manifest["model"], "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
            if lora_field is not None:
                body["lora"] = lora_field
            answers[key] = post_json(f"{manifest['url']}/completions", body)["choices"][0]["text"]

        # Two students at once (two slots): one on the adapter, one on the bare base.
        threads = [threading.Thread(target=ask, args=("tuned", [{"id": lora["id"], "scale": 1.0}])),
                   threading.Thread(target=ask, args=("base", None))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert answers["tuned"] and answers["base"] and answers["tuned"] != answers["base"]
        ask("tuned_alone", [{"id": lora["id"], "scale": 1.0}])
        assert answers["tuned_alone"] == answers["tuned"]  # batching with another request changes nothing

        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert f"MEDSTUDY_SERVING_BACKEND=openai MEDSTUDY_SERVING_URL=http://127.0.0.1:{port}/v1" in out
    assert processes_with(f"--host 127.0.0.1 --port {port}") == [] and port_is_free("127.0.0.1", port)
    assert not manifest_path.exists()  # a stale manifest would point the app at a dead server

    # The export is cached by content: asking again returns the same file without rewriting it.
    gguf_path = Path(lora["gguf"])
    mtime = gguf_path.stat().st_mtime_ns
    from core.model import sha256_file

    base = find_embedded_gguf()
    again = llamacpp.export_for_serving(DEFAULT_ADAPTER_DIR, work / "serving", base_gguf=base, base_sha=sha256_file(base))
    assert again == gguf_path and gguf_path.stat().st_mtime_ns == mtime
