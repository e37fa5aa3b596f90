"""The user's tutorial (seed/TUTORIAL_zh.md), its Python blocks run as written with the import lines changed.

Two more edits, each forced by this machine or by the tutorial itself: `device_map="cuda"` becomes "cpu"
(there is no GPU here) and the tutorial's typo `histroy` becomes `history`. Its clips are found where it
says (`assets/audio/...`, a link to the shared clips) and "Qwen/Qwen-Audio-Chat" is found in a Hugging
Face cache that holds the tiny checkpoint, through the same lookup a real download would fill.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import AUDIO, SHARED, TINY, need_shared

EDITS = [
    ("from transformers import AutoModelForCausalLM, AutoTokenizer",
     "from qwen_audio import AutoModelForCausalLM, AutoTokenizer"),
    ("from transformers.generation import GenerationConfig", "from qwen_audio import GenerationConfig"),
    ('device_map="cuda"', 'device_map="cpu"'),
    ("history=histroy", "history=history"),
]


def tutorial_code(model: str = "Qwen/Qwen-Audio-Chat") -> str:
    text = (SHARED / "seed" / "TUTORIAL_zh.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    for old, new in EDITS:
        assert old in code, f"the tutorial no longer says {old!r}"
        code = code.replace(old, new)
    return code.replace('"Qwen/Qwen-Audio-Chat"', json.dumps(model))


def workdir(tmp_path):
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "audio").symlink_to(AUDIO)
    return tmp_path


def hub_cache(tmp_path):
    """A Hugging Face cache in which Qwen/Qwen-Audio-Chat is the tiny checkpoint (answers capped at 16 tokens)."""
    repo = tmp_path / "hf" / "hub" / "models--Qwen--Qwen-Audio-Chat"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in TINY.iterdir():
        if f.name not in ("generation_config.json", "goldens.json", "goldens.npz"):
            (snapshot / f.name).symlink_to(f)
    gen = json.loads((TINY / "generation_config.json").read_text())
    (snapshot / "generation_config.json").write_text(json.dumps({**gen, "max_new_tokens": 16}))
    return tmp_path / "hf"


def run(code, cwd, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "default", "HF_HUB_OFFLINE": "1", **env})


def test_the_tutorial_runs_on_the_faithful_model(tmp_path):
    need_shared()
    code = tutorial_code()
    out = run(code, workdir(tmp_path), HF_HOME=str(hub_cache(tmp_path)))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "music.wav: 96.6 s of audio; only the first 30 s are used (66.6 s dropped)" in out.stderr
    # Every answer was printed (random weights write random text, possibly several lines each).
    assert code.count("print(response)") == 13 and out.stdout.count("\n") >= 13


def test_the_tutorial_runs_on_lite(tmp_path):
    need_shared()
    pytest.importorskip("faster_whisper", reason="lite extras not installed: pip install 'qwen-audio[lite]'")
    code = re.sub(r"history=(\w+)\)", r"history=\1, max_new_tokens=48)", tutorial_code("lite"))  # short open answers
    out = run(code, workdir(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout.lower()
    for heard in ("middle classes", "starts at <|", "también podemos", "companionless", "shelley"):
        assert heard in text, (heard, out.stdout)


def test_the_example_script_runs(tmp_path):
    """examples/tutorial.py, the same calls as a script taking the model and the clips' folder."""
    need_shared()
    from .conftest import REPO

    snapshot = hub_cache(tmp_path) / "hub" / "models--Qwen--Qwen-Audio-Chat" / "snapshots" / ("0" * 40)
    out = run(f"import runpy, sys; sys.argv = ['tutorial.py', {str(snapshot)!r}, {str(AUDIO)!r}]; "
              f"runpy.run_path({str(REPO / 'examples' / 'tutorial.py')!r}, run_name='__main__')", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("\n") >= 13
