"""A real uvicorn server for the server tests, on 127.0.0.1, and a client helper (shared by test_server and
test_rerank)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx

from helpers import REPO

KEY = "test-key-123"
NAME = "hpd-tiny"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Server:
    """uvicorn in a thread of this process, on a socket bound to 127.0.0.1, stopped at the end of the module."""

    def __init__(self, model, header_timeout: float = 10.0, index=None, **cfg) -> None:
        import uvicorn

        from tinyhpd.server import ServeConfig, create_app
        from tinyhpd.server.protocol import with_header_timeout

        self.sock = free_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        cfg.setdefault("engine", "thread")  # the model in this process: tests can replace its encode_ids
        app = self.app = create_app(model, ServeConfig(served_model_name=NAME, **cfg), index=index)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                    http=with_header_timeout(header_timeout)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        wait_healthy(self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    """Returns once GET url/health answers 200; RuntimeError after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy within {timeout:g} s")


def start_cli_server(args, timeout: float = 90.0):
    """`python -m tinyhpd serve ARGS` (one thread, warnings only) in a child process on a free 127.0.0.1 port:
    (process, url) once /health answers 200; the process is killed if it never does."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "tinyhpd", "serve", *args, "--port", str(port), "--threads", "1",
                             "--log-level", "warning"], env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def post(server, path, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30, **kw)


def metrics(server, key=KEY) -> str:
    """The /metrics text (behind the key when the server has one)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
