"""The end-to-end rig: real nginx running the unmodified plugins (through the test-only harness),
the real Astrocyte gateway in api_key mode on SQLite, a small OpenAI-compatible upstream and a
misbehaving Astrocyte stand-in (slow, 500). Every server binds a free port on 127.0.0.1.

Used by the pytest suite and by benchmarks/plugin_latency.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parent.parent  # gateway-plugins/
SERVICE_KEY = "svc-plugin-key-0123456789"
SERVICE_PRINCIPAL = "service:llm-proxy"
CONSUMERS = {"alice-key": "alice", "bob-key": "bob", "carol-key": "carol"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A threaded HTTP server for `handler` on a free port, serving from a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes] | None, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not answer at {url}")


# -- the OpenAI-compatible upstream ------------------------------------------------------------


class Upstream:
    """Answers chat completions as JSON or SSE, chosen by the request's `stream` and `model`:
    `stream-slow` pauses between the first chunk and the rest, `interrupt` drops the connection
    mid-stream. Every request is recorded under its `X-Test-Case` header."""

    def __init__(self, pause: float = 0.8) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.pause = pause
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle's algorithm and
                # delayed ACKs hold the body back ~40 ms on every keep-alive request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                case = self.headers.get("X-Test-Case", "")
                record = {"headers": dict(self.headers.items()), "raw": raw.decode(), "body": body}
                upstream.seen.setdefault(case, []).append(record)
                if body.get("stream"):
                    self._stream(body, case, record)
                else:
                    self._json(body, case)

            def _json(self, body: dict[str, Any], case: str) -> None:
                answer = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "m"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"reply-{case}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> None:
                event = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": "m",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                self._frame(f"data: {json.dumps(event)}\n\n".encode())

            def _frame(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, body: dict[str, Any], case: str, record: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("X-Accel-Buffering", "no")
                self.end_headers()
                self._chunk({"role": "assistant", "content": "reply-"})
                if body.get("model") == "interrupt":
                    self._chunk({"content": f"partial-{case}"})
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if body.get("model") == "stream-slow":
                    time.sleep(upstream.pause)
                self._chunk({"content": case})
                self._chunk({}, finish="stop")
                self._frame(b"data: [DONE]\n\n")
                record["finished_at"] = time.time()
                self.wfile.write(b"0\r\n\r\n")

        self.server, self.url = _serve(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BrokenAstrocyte:
    """An Astrocyte that misbehaves: under /slow it answers after `delay` seconds, under /err with 500."""

    def __init__(self, delay: float = 2.0) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.startswith("/slow"):
                    time.sleep(delay)
                    status, data = 200, b'{"hits": [], "total_available": 0, "truncated": false}'
                else:
                    status, data = 500, b'{"detail": "boom", "code": "internal_error", "request_id": "x"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

        self.server, self.url = _serve(Handler)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the real Astrocyte gateway ----------------------------------------------------------------

ASTROCYTE_YAML = """\
store: sqlite
store_config: {{path: {db}}}
embedder: hashing
access_control: {{enabled: true}}
access_grants:
  - {{bank_id: "user:*", principal: "{service}", permissions: [read, write]}}
  - {{bank_id: "notes:*", principal: "{service}", permissions: [read, write]}}
  - {{bank_id: "user:alice", principal: "user:alice", permissions: [read, write]}}
  - {{bank_id: "notes:alice", principal: "user:alice", permissions: [read, write]}}
  - {{bank_id: "user:bob", principal: "user:bob", permissions: [read, write]}}
  - {{bank_id: "user:carol", principal: "user:carol", permissions: [read, write]}}
"""


class Gateway:
    """`uvicorn astrocyte_gateway.app:create_app` in api_key mode with one trusted-service key."""

    def __init__(self, folder: Path) -> None:
        config = folder / "astrocyte.yaml"
        config.write_text(ASTROCYTE_YAML.format(db=folder / "astrocyte.db", service=SERVICE_PRINCIPAL))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "ASTROCYTE_AUTH_MODE": "api_key",
            "ASTROCYTE_API_KEYS": json.dumps(
                {SERVICE_KEY: {"principal": SERVICE_PRINCIPAL, "trusted_service": True}}
            ),
            "ASTROCYTE_CONFIG_PATH": str(config),
            "ASTROCYTE_ACCESS_LOG": "false",
        }
        command = [sys.executable, "-m", "uvicorn", "astrocyte_gateway.app:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.log = open(folder / "gateway.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        _wait_http(f"{self.url}/live", self.process, "gateway")
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def _headers(self, user: str) -> dict[str, str]:
        return {"X-API-Key": SERVICE_KEY, "X-Astrocyte-Principal": f"user:{user}"}

    def retain(self, user: str, bank: str, content: str) -> None:
        answer = self.http.post(
            "/v1/retain", json={"bank_id": bank, "content": content}, headers=self._headers(user)
        )
        answer.raise_for_status()

    def recall(self, user: str, bank: str, query: str, max_results: int = 10) -> list[dict[str, Any]]:
        body = {"bank_id": bank, "query": query, "max_results": max_results}
        answer = self.http.post("/v1/recall", json=body, headers=self._headers(user))
        answer.raise_for_status()
        return list(answer.json()["hits"])

    def stop(self) -> None:
        self.http.close()
        _stop_process(self.process)
        self.log.close()


# -- nginx running both plugins ----------------------------------------------------------------

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
{load_modules}
events {{ worker_connections 1024; }}
http {{
  access_log off;
  lua_package_path "{lua_path};;";
  client_body_buffer_size 1m;
  client_max_body_size 16m;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  lua_socket_log_errors off;
  init_by_lua_block {{
    require("astrocyte_harness.kong").init("{config}")
    require("astrocyte_harness.apisix").init("{config}")
  }}
  upstream llm {{
    server 127.0.0.1:{upstream_port};
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/(kong|apisix)/([a-z0-9_]+)/(.*)$ {{
      set $platform $1;
      set $route $2;
      set $rest $3;
      access_by_lua_block {{ require("astrocyte_harness." .. ngx.var.platform).access(ngx.var.route) }}
      header_filter_by_lua_block {{ require("astrocyte_harness." .. ngx.var.platform).header_filter() }}
      body_filter_by_lua_block {{ require("astrocyte_harness." .. ngx.var.platform).body_filter() }}
      log_by_lua_block {{ require("astrocyte_harness." .. ngx.var.platform).log() }}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://llm/$rest$is_args$args;
    }}
  }}
}}
"""


def lua_path() -> str:
    roots = [PLUGINS / "kong", PLUGINS / "apisix", PLUGINS / "lua-shared", HERE / "harness"]
    return ";".join(f"{root}/?.lua" for root in roots)


class Nginx:
    """nginx with the Lua module; routes /kong/<route>/ and /apisix/<route>/ proxy to the upstream."""

    def __init__(self, folder: Path, upstream_port: int, routes: dict[str, Any]) -> None:
        nginx = os.environ.get("ASTROCYTE_TEST_NGINX_BIN", "/usr/sbin/nginx")
        modules_conf = os.environ.get("ASTROCYTE_TEST_NGINX_MODULES_CONF")
        load_modules = Path(modules_conf).read_text() if modules_conf else ""
        self.prefix = folder / "nginx"
        self.prefix.mkdir(parents=True, exist_ok=True)
        config = self.prefix / "harness.json"
        config.write_text(json.dumps({"consumers": CONSUMERS, "routes": routes}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=self.prefix,
                load_modules=load_modules,
                lua_path=lua_path(),
                config=config,
                upstream_port=upstream_port,
                port=self.port,
            )
        )
        self.error_log = self.prefix / "error.log"
        command = [
            nginx,
            "-p",
            str(self.prefix),
            "-c",
            str(conf),
            "-e",
            str(self.error_log),
            "-g",
            "daemon off;",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_http(f"{self.url}/", self.process, "nginx", timeout=15.0)
        except RuntimeError as exc:
            raise RuntimeError(
                f"nginx failed: {self.error_log.read_text() if self.error_log.exists() else ''}"
            ) from exc

    def base_url(self, platform: str, route: str) -> str:
        return f"{self.url}/{platform}/{route}/v1"

    def stop(self) -> None:
        _stop_process(self.process)


def plugin_conf(url: str, **overrides: Any) -> dict[str, Any]:
    return {"astrocyte_url": url, "api_key": SERVICE_KEY, **overrides}


@contextlib.contextmanager
def started(*servers: Any) -> Iterator[None]:
    try:
        yield
    finally:
        for server in reversed(servers):
            server.stop()
