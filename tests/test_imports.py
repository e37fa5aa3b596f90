"""The core imports quietly and pulls in no optional or heavy dependency until it is used."""

from __future__ import annotations

import json
import subprocess
import sys

LAZY = ["faster_whisper", "ctranslate2", "gguf", "tokenizers", "onnxruntime", "transformers", "av", "huggingface_hub"]


def test_import_is_quiet_and_lazy():
    code = ("import sys, json, qwen_audio; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({LAZY!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    assert out.stderr == ""
