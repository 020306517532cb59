"""A real uvicorn server for the server tests, on 127.0.0.1, and a client helper (shared by test_server and
test_rerank)."""
from __future__ import annotations

import socket
import threading
import time

import httpx

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
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def post(server, path, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30, **kw)


def metrics(server, key=KEY) -> str:
    """The /metrics text (behind the key when the server has one)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
