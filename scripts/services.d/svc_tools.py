"""Tools the tests run themselves (no daemon here): nginx with the Lua module, busted, Chromium, Mono."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from svc_base import Service, require
from svc_common import HOST, ServiceError, deb_installed, pick_port, run, save_state, say

MODULES = Path("/usr/lib/nginx/modules")
NDK_MODULE = MODULES / "ndk_http_module.so"
LUA_MODULE = MODULES / "ngx_http_lua_module.so"

_SMOKE_CONF = """{load_modules}
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 32; }}
http {{
  access_log off;
  server {{
    listen {host}:{port};
    location / {{
      default_type application/json;
      content_by_lua_block {{
        local cjson = require "cjson"
        ngx.say(cjson.encode({{ lua = true }}))
      }}
    }}
  }}
}}
"""


def _bin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


class Nginx(Service):
    """Checks that nginx loads the Lua module and serves a Lua response; starts nothing that stays."""

    name = "nginx"
    packages = ("nginx", "libnginx-mod-http-lua", "lua-cjson", "lua-busted")

    def missing_debs(self) -> list[str]:
        return [package for package in self.packages if not deb_installed(package)]

    def up(self) -> dict[str, str]:
        nginx, busted = _bin("nginx"), _bin("busted")
        require(nginx is not None, "nginx binary not found after install", self.log)
        require(busted is not None, "busted binary not found after install", self.log)
        require(
            LUA_MODULE.exists() and NDK_MODULE.exists(), f"Lua/NDK modules missing in {MODULES}", self.log
        )
        modules_conf = self.dir / "load_modules.conf"
        modules_conf.write_text(f"load_module {NDK_MODULE};\nload_module {LUA_MODULE};\n")
        self._smoke_test(str(nginx), modules_conf.read_text())
        run([str(busted), "--version"], self.log, timeout=30)
        env = {
            "ASTROCYTE_TEST_NGINX_BIN": str(nginx),
            "ASTROCYTE_TEST_NGINX_LUA_MODULE": str(LUA_MODULE),
            "ASTROCYTE_TEST_NGINX_NDK_MODULE": str(NDK_MODULE),
            "ASTROCYTE_TEST_NGINX_MODULES_CONF": str(modules_conf),
            "ASTROCYTE_TEST_BUSTED_BIN": str(busted),
        }
        save_state(self.name, {"ready": True, "env": env})
        say(f"nginx: {nginx} serves Lua (modules: {modules_conf}); busted at {busted}")
        return env

    def _smoke_test(self, nginx: str, load_modules: str) -> None:
        """`nginx -t`, then a real request answered by content_by_lua_block, then stop it."""
        prefix = self.dir / "smoke"
        prefix.mkdir(exist_ok=True)
        port = pick_port(None)
        conf = prefix / "nginx.conf"
        conf.write_text(_SMOKE_CONF.format(load_modules=load_modules, prefix=prefix, host=HOST, port=port))
        base = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        run([*base, "-t"], self.log, timeout=30)
        proc = subprocess.Popen(
            base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            body = self._fetch(f"http://{HOST}:{port}/", proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        require(b'"lua":true' in body, f"nginx Lua smoke test answered {body[:80]!r}", prefix / "error.log")

    def _fetch(self, url: str, proc: subprocess.Popen) -> bytes:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(
                    f"nginx exited with code {proc.returncode}", self.dir / "smoke" / "error.log"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.read()
            except OSError:
                time.sleep(0.2)
        raise ServiceError("nginx Lua smoke test got no answer within 15s", self.dir / "smoke" / "error.log")


class Chromium(Service):
    """Headless Chromium for the gateway docs test; checks it renders a page, starts nothing that stays."""

    name = "chromium"
    # fonts-liberation is only a Recommends of chromium, and we install without recommends.
    packages = ("chromium", "fonts-liberation")

    def missing_debs(self) -> list[str]:
        return [package for package in self.packages if not deb_installed(package)]

    def up(self) -> dict[str, str]:
        chromium = _bin("chromium")
        require(chromium is not None, "chromium binary not found after install", self.log)
        profile = self.dir / "profile"
        cmd = [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--dump-dom",
            "data:text/html,<p>astrocyte-probe</p>",
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise ServiceError("headless chromium did not render within 60s", self.log) from exc
        self.log.write_bytes(out.stderr)
        require(
            b"astrocyte-probe" in out.stdout,
            f"headless chromium exited {out.returncode} without rendering",
            self.log,
        )
        env = {"ASTROCYTE_TEST_CHROMIUM_BIN": str(chromium)}
        save_state(self.name, {"ready": True, "env": env})
        say(f"chromium: {chromium} renders headless")
        return env


_MONO_SMOKE = """using Newtonsoft.Json.Linq;
public static class Smoke
{
    public static void Main() { System.Console.WriteLine(new JObject(new JProperty("mono", true)).ToString()); }
}
"""


class Mono(Service):
    """Mono's C# compiler and Newtonsoft.Json, to run APIM policy expressions; starts nothing that stays."""

    name = "mono"
    packages = ("mono-mcs", "libnewtonsoft-json-cil-dev")
    newtonsoft = Path("/usr/lib/cli/Newtonsoft.Json-5.0/Newtonsoft.Json.dll")

    def missing_debs(self) -> list[str]:
        return [package for package in self.packages if not deb_installed(package)]

    def up(self) -> dict[str, str]:
        mcs, mono = _bin("mcs"), _bin("mono")
        require(mcs is not None and mono is not None, "mcs or mono not found after install", self.log)
        require(self.newtonsoft.exists(), f"{self.newtonsoft} missing after install", self.log)
        self.dir.mkdir(parents=True, exist_ok=True)
        source, exe = self.dir / "smoke.cs", self.dir / "smoke.exe"
        source.write_text(_MONO_SMOKE)
        run([str(mcs), "-nologo", f"-r:{self.newtonsoft}", f"-out:{exe}", str(source)], self.log, timeout=120)
        out = subprocess.run(
            [str(mono), str(exe)],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={"MONO_PATH": str(self.newtonsoft.parent), "PATH": "/usr/bin:/bin"},
        )
        require(b'"mono": true' in out.stdout, f"mono smoke test printed {out.stdout[:80]!r}", self.log)
        env = {
            "ASTROCYTE_TEST_MCS_BIN": str(mcs),
            "ASTROCYTE_TEST_MONO_BIN": str(mono),
            "ASTROCYTE_TEST_NEWTONSOFT_DLL": str(self.newtonsoft),
        }
        save_state(self.name, {"ready": True, "env": env})
        say(f"mono: {mcs} compiles against {self.newtonsoft}")
        return env
