"""Serve a backend over HTTP: OpenAI's chat and audio endpoints and a web page (`qwen-audio serve`).

Needs the `server` extras (starlette, uvicorn, python-multipart); the rest of the library never imports this.
"""

from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
