"""lite's open answers judged on a written question set (benchmarks/open_questions.py), per LLM and prompt.

    python benchmarks/lite_open.py [--llm qwen2.5-0.5b qwen2.5-1.5b] [--quantize none int4]
                                   [--prompt grounded plain] [--max-new-tokens 160] [--only N ...]

For each LLM x quantization x prompt, every question is asked in a fresh conversation (greedy; a follow-up after the
earlier turns its `before` lists, which lite answers itself) and the LLM's part of the answer (after lite's lead
line, where the question brings clips) is judged: each `must` pattern matches, no `must_not` or global
pattern does, and a Chinese question gets a mostly Chinese answer. Printed: each question's verdict with the
reason and the answer's start, the pass share per kind and overall, the LLM's tokens/s, and the time from the
lead line to the LLM's first words (median, first question excluded: it loads the LLM). `plain` is lite's prompt;
`grounded` adds `TRIED_RULES` after the question. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AUDIO, machine  # noqa: E402
from benchmarks.open_questions import GLOBAL_MUST_NOT, QUESTIONS, OpenQuestion  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
# The rules `--prompt grounded` tells the LLM after an open question (lite tells none).
TRIED_RULES = ("Answer the question using the facts above. The sounds happened around the listener: advice is "
               "about that situation, not about audio files or software. If the facts cannot tell something "
               "(a name, an age, a place), say that it cannot be known from the audio.")


def make_mixes(folder: Path) -> dict[str, str]:
    """The set's mixed clips: the Quilter reading over the piano (music 6 dB under the speech) and over the
    glass breaking (the glass at half amplitude, from the start)."""
    from qwen_audio.audio import load_audio, save_wav

    speech = load_audio(str(AUDIO / "1272-128104-0000.flac"))
    music = np.resize(load_audio(str(AUDIO / "music.wav")), len(speech))
    glass = load_audio(str(AUDIO / "glass-breaking-151256.mp3"))[: len(speech)]

    def rms(x):
        return float(np.sqrt(np.mean(x ** 2)))

    out = {}
    for name, mix in (("mix:speech+music", speech + music * rms(speech) / rms(music) * 10 ** (-6 / 20)),
                      ("mix:speech+glass", speech + np.pad(glass * 0.5, (0, len(speech) - len(glass))))):
        path = folder / (name.replace(":", "-").replace("+", "-") + ".wav")
        save_wav(str(path), mix / max(1.0, float(np.abs(mix).max())))
        out[name] = str(path)
    return out


def judge(q: OpenQuestion, text: str) -> str:
    """'' when the answer passes, else why not."""
    for pattern in q.must:
        if not re.search(pattern, text, re.I):
            return f"missing /{pattern[:40]}/"
    for pattern in (*q.must_not, *GLOBAL_MUST_NOT):
        m = re.search(pattern, text, re.I)
        if m:
            return f"says {m.group(0)!r}"
    if CJK.search(q.question):  # quotes of what was said stay in the language spoken
        letters = [c for c in re.sub(r"[“\"「][^”\"」]*[”\"」]", "", text) if c.isalpha()]
        if letters and sum(bool(CJK.match(c)) for c in letters) < 0.3 * len(letters):
            return "not in Chinese"
    return ""


def run(llm: str, quantize: str | None, prompt: str, max_new: int, only: list[int], mixes: dict[str, str]) -> None:
    from qwen_audio.lite import load_lite
    from qwen_audio.lite.llm import SmolChat

    real_answer = SmolChat.answer

    def with_rules(self, messages, cfg, opening="", cancel=None):
        """lite's prompt with `TRIED_RULES` after the question (before a Chinese question's reply line), not
        for stories, as they were measured."""
        if not opening:
            role, text = messages[-1]
            head, zh, tail = text.rpartition("\n请用中文详细回答。")
            messages = [*messages[:-1], (role, f"{head}\n\n{TRIED_RULES}{zh}" if zh else f"{text}\n\n{TRIED_RULES}")]
        return real_answer(self, messages, cfg, opening, cancel)

    if prompt == "grounded":
        SmolChat.answer = with_rules
    try:
        model, tok = load_lite(llm=llm, quantize=quantize, reload=True)
        print(f"\n## {llm}, {quantize or 'bf16/f32'} weights, {prompt} prompt\n")
        print("| # | kind | question | verdict | answer (LLM part, start) |\n| --- | --- | --- | --- | --- |")
        verdicts, firsts, rates = {}, [], []
        for n, q in enumerate(QUESTIONS):
            if only and n not in only:
                continue
            history = None
            for clips, asked in q.before:  # earlier turns, as a user asks them first
                earlier = [{"audio": mixes.get(c) or str(AUDIO / c)} for c in clips] + [{"text": asked}]
                _, history = model.chat(tok, tok.from_list_format(earlier), history=history, max_new_tokens=max_new)
            items = [{"audio": mixes.get(c) or str(AUDIO / c)} for c in q.clips] + [{"text": q.question}]
            stream = model.chat_stream(tok, tok.from_list_format(items), history=history, max_new_tokens=max_new)
            pieces, times, t = [], [], time.perf_counter()
            for piece in stream:
                pieces.append(piece)
                times.append(time.perf_counter() - t)
            # The lead line is lite's own (composed from the reports); the LLM's part is what follows it.
            lead = len(pieces) > 1 and pieces[0].endswith("\n")
            llm_part = "".join(pieces[1:]) if lead else "".join(pieces)
            why = judge(q, llm_part)
            verdicts.setdefault(q.kind, []).append(not why)
            if lead and n != (only[0] if only else 0):
                firsts.append(times[1] - times[0])
            stats = stream.stats
            if stats is not None and stats.new_tokens > 8 and len(times) > 2 and n != (only[0] if only else 0):
                rates.append((stats.new_tokens - 1) / (times[-1] - times[1]))  # after the first LLM piece
            short = " ".join(llm_part.split())[:150].replace("|", "/")
            print(f"| {n} | {q.kind} | {q.question[:60]} | {'pass' if not why else why} | {short} |", flush=True)
        every = [v for vs in verdicts.values() for v in vs]
        print()
        for kind, vs in [*verdicts.items(), ("all", every)]:
            print(f"* {kind}: {sum(vs)}/{len(vs)} pass")
        if firsts:
            print(f"* lead line to the LLM's first words: median {statistics.median(firsts):.2f} s, "
                  f"max {max(firsts):.2f} s")
        if rates:
            print(f"* LLM decode: median {statistics.median(rates):.1f} tokens/s")
    finally:
        SmolChat.answer = real_answer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", nargs="+", default=["qwen2.5-0.5b"])
    ap.add_argument("--quantize", nargs="+", default=["none"])
    ap.add_argument("--prompt", nargs="+", default=["plain"], choices=["plain", "grounded"])
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--only", type=int, nargs="*", default=[])
    args = ap.parse_args()
    print(f"machine: {machine()}; {len(QUESTIONS)} questions")
    with tempfile.TemporaryDirectory() as tmp:
        mixes = make_mixes(Path(tmp))
        for llm in args.llm:
            for quantize in args.quantize:
                for prompt in args.prompt:
                    run(llm, None if quantize == "none" else quantize, prompt, args.max_new_tokens, args.only, mixes)


if __name__ == "__main__":
    main()
