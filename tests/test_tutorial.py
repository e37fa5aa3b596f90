"""The tutorial's code, with only the import line changed, runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import AUDIO, REPO, TINY, need_shared


def test_tutorial_runs_with_one_import_changed(tmp_path):
    need_shared()
    # The tiny checkpoint, with a generation config that keeps its random answers short.
    ckpt = tmp_path / "tiny"
    ckpt.mkdir()
    for f in TINY.iterdir():
        if f.name != "generation_config.json":
            (ckpt / f.name).symlink_to(f)
    gen = json.loads((TINY / "generation_config.json").read_text())
    (ckpt / "generation_config.json").write_text(json.dumps({**gen, "max_new_tokens": 16}))
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, str(REPO / "examples" / "tutorial.py"), str(ckpt), str(AUDIO)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()
    assert "music.wav: 96.6 s of audio; only the first 30 s are used (66.6 s dropped)" in out.stderr
    source = (REPO / "examples" / "tutorial.py").read_text()
    assert "\nfrom transformers" not in source and "trust_remote_code=True" in source
