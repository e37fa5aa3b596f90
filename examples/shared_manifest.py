"""Write an evaluation manifest of the tutorial's clips, with what the tutorial says they hold.

    python examples/shared_manifest.py -o shared.jsonl [--audio-dir DIR] [--tasks asr,grounding]
    qwen-audio eval all --manifest shared.jsonl --model lite

Each row names its task and, in "source", where its reference comes from: a LibriSpeech label the
tutorial quotes, a sentence the tutorial states, or an answer the tutorial shows as expected (the
model's own words, so a reference only as good as that answer). The two reference translations are
not in the tutorial: they were written for this example. 26 clips' worth of rows is a smoke test of
the pipeline and of a backend's behaviour, not a benchmark.

DIR defaults to $QWEN_AUDIO_FIXTURES/audio, else ../shared/audio beside the repository; the manifest
holds absolute paths, so it can be written anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TUTORIAL = "TUTORIAL_zh.md"
ROWS = [
    # Speech recognition: reference transcripts.
    dict(task="asr", id="asr-1272", audio="1272-128104-0000.flac", language="en",
         text="MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL",
         source=f"LibriSpeech label quoted in {TUTORIAL}"),
    dict(task="asr", id="asr-1089", audio="1089_134686_000007_000004.wav", language="en",
         text="The music came nearer and he recalled the words, the words of Shelley's fragment upon the moon "
              "wandering companionless, pale for weariness.",
         source=f"{TUTORIAL}, Grounding: what the sentence says"),
    dict(task="asr", id="asr-es", audio="es.mp3", language="es",
         text="Bueno, también podemos considerar algunas actividades divertidas como los deportes acuáticos.",
         source=f"{TUTORIAL}, expected answer (多语种语音理解)"),
    dict(task="asr", id="asr-cq", audio="example-重庆话.wav", language="zh",
         text="对了我还想提议我们可以租一些自行车骑行一下既锻炼身体又心情愉悦",
         source=f"{TUTORIAL}, expected answer (Chongqing dialect)"),
    dict(task="asr", id="asr-sad", audio="你没事吧-消极.wav", language="zh", text="你没事吧",
         source=f"{TUTORIAL}: both clips say 你没事吧"),
    dict(task="asr", id="asr-relaxed", audio="你没事吧-轻松.wav", language="zh", text="哈哈你没事吧",
         source=f"{TUTORIAL}, expected answer (多音频输入, the story)"),
    # Speech translation into English: references written for this example.
    dict(task="st", id="st-es", audio="es.mp3", language="es", target="en",
         text="Well, we can also consider some fun activities such as water sports.",
         source="translation written for this example"),
    dict(task="st", id="st-cq", audio="example-重庆话.wav", language="zh", target="en",
         text="Right, I would also like to suggest that we rent some bicycles and go for a ride, which both "
              "exercises the body and lifts the mood.",
         source="translation written for this example"),
    # Sound events, instruments, emotion, language: labels.
    dict(task="sound", id="sound-glass", audio="glass-breaking-151256.mp3", label="glass breaking",
         source=f"{TUTORIAL}, 环境音理解"),
    dict(task="sound", id="sound-speech", audio="1272-128104-0000.flac", label="speech",
         source=f"{TUTORIAL}: a man speaking"),
    dict(task="instrument", id="instrument-music", audio="music.wav", label="piano",
         source=f"{TUTORIAL}, 音乐分析: a piano solo"),
    dict(task="emotion", id="emotion-relaxed", audio="你没事吧-轻松.wav", label="happy",
         source=f"{TUTORIAL}, 多音频输入: happy in the first audio"),
    dict(task="emotion", id="emotion-sad", audio="你没事吧-消极.wav", label="sad",
         source=f"{TUTORIAL}, 多音频输入: sad in the second audio"),
    dict(task="emotion", id="emotion-es", audio="es.mp3", label="neutral",
         source=f"{TUTORIAL}, 多语种语音理解: this person is neutral"),
    dict(task="language", id="language-1272", audio="1272-128104-0000.flac", label="en", source=TUTORIAL),
    dict(task="language", id="language-es", audio="es.mp3", label="es", source=TUTORIAL),
    dict(task="language", id="language-cq", audio="example-重庆话.wav", label="zh",
         source=f"{TUTORIAL}: Southwestern Mandarin"),
    dict(task="language", id="language-relaxed", audio="你没事吧-轻松.wav", label="zh", source=TUTORIAL),
    # Word grounding: the tutorial's times (its clips cut at them are in the same folder).
    dict(task="grounding", id="ground-middle", audio="1272-128104-0000.flac", words="middle classes",
         start=2.33, end=3.26, source=f"{TUTORIAL}, 多轮问答"),
    dict(task="grounding", id="ground-companionless", audio="1089_134686_000007_000004.wav", words="companionless",
         start=6.28, end=7.15, source=f"{TUTORIAL}, Grounding"),
    dict(task="grounding", id="ground-shelley", audio="1089_134686_000007_000004.wav", words="shelley's",
         start=3.79, end=4.33, source=f"{TUTORIAL}, Grounding (the person name)"),
    # Questions about the audio.
    dict(task="aqa", id="aqa-music-speech", audio="music.wav", question="Is anyone speaking in this audio?",
         answer="no", source=f"{TUTORIAL}: a piano solo"),
    dict(task="aqa", id="aqa-glass", audio="glass-breaking-151256.mp3", question="Did something break?",
         answer="yes", source=f"{TUTORIAL}: breaking glass"),
    dict(task="aqa", id="aqa-speaker", audio="1272-128104-0000.flac", question="Is the speaker a man or a woman?",
         answer="man", synonyms=["male"], source=f"{TUTORIAL}: a man's voice"),
    dict(task="aqa", id="aqa-sport", audio="es.mp3", question="Which sport does the speaker mention?",
         answer="water sports", synonyms=["deportes acuáticos", "water sport", "aquatic sports"],
         source=f"{TUTORIAL}: the transcript"),
    dict(task="aqa", id="aqa-bikes", audio="example-重庆话.wav", question="What does the speaker suggest renting?",
         answer="bicycles", synonyms=["bikes", "bicycle", "bike", "自行车"], source=f"{TUTORIAL}: the transcript"),
]


def default_audio_dir() -> Path:
    shared = os.environ.get("QWEN_AUDIO_FIXTURES")
    return Path(shared) / "audio" if shared else Path(__file__).resolve().parents[2] / "shared" / "audio"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", required=True, help="the manifest to write (JSON lines)")
    parser.add_argument("--audio-dir", type=Path, default=default_audio_dir(), help="the tutorial's clips")
    parser.add_argument("--tasks", help="only these tasks, comma-separated (default: all)")
    args = parser.parse_args(argv)
    tasks = set(args.tasks.split(",")) if args.tasks else None
    rows = [r for r in ROWS if tasks is None or r["task"] in tasks]
    missing = sorted({r["audio"] for r in rows if not (args.audio_dir / r["audio"]).is_file()})
    if missing:
        print(f"shared_manifest: not in {args.audio_dir}: {', '.join(missing)}", file=sys.stderr)
        return 1
    with open(args.output, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({**row, "audio": str(args.audio_dir.resolve() / row["audio"])}, ensure_ascii=False) + "\n")
    print(f"shared_manifest: wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
