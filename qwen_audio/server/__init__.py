"""Serve a backend over HTTP: OpenAI's chat and audio endpoints and a web page (`qwen-audio serve`).

`app.create_app(backend, ServerConfig(...))` builds the Starlette app; it needs the `server` extras
(starlette, uvicorn, python-multipart). `protocol` (OpenAI's wire format) needs nothing beyond the
library, so batch jobs reuse it without the extras; nothing here is imported by `qwen_audio` itself.
"""
