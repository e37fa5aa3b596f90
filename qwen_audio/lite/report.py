"""One structured report per clip: what was said, what sounded when, music, and voice cues.

`make_report(samples, hearing, tags)` joins what Whisper heard (transcript, language, word times),
YAMNet's AudioSet scores (every 0.24 s) and the voice measurements into one `Report`; answers are
composed from it (see `answer.py`) and the model caches it per clip identity. AudioSet's 521 classes are
folded into named groups (`GROUPS`: "breaking glass" = Glass, Shatter, Breaking, Smash, Chink),
so an answer names what a person would, with the times at which the group scores high.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..audio import SAMPLE_RATE
from .asr import Hearing
from .events import Tags
from .voice import VoiceCues, measure_voice

SOUND, VOCAL, INSTRUMENT = "sound", "vocal", "instrument"

# (name, kind, AudioSet class indices). A name is the phrase an answer uses ("a sound effect of
# breaking glass", "the instrument is the piano"); the first group of a class claims it.
GROUPS: list[tuple[str, str, tuple[int, ...]]] = [
    # voice sounds (cues, not speech)
    ("laughter", VOCAL, (13, 14, 15, 16, 17, 18)),
    ("crying", VOCAL, (19, 20, 21, 22)),
    ("a sigh", VOCAL, (23,)),
    ("singing", VOCAL, (24, 25, 26, 27, 28, 29, 30)),
    ("rapping", VOCAL, (31,)),
    ("humming", VOCAL, (32,)),
    ("shouting", VOCAL, (6, 7, 8, 9, 10)),
    ("screaming", VOCAL, (11,)),
    ("whispering", VOCAL, (12,)),
    ("a gasp", VOCAL, (39,)),
    ("breathing", VOCAL, (36, 37, 40, 41)),
    ("coughing", VOCAL, (42, 43)),
    ("sneezing", VOCAL, (44,)),
    ("snoring", VOCAL, (38,)),
    ("a groan", VOCAL, (33, 34)),
    # instruments (most specific first)
    ("piano", INSTRUMENT, (148, 149)),
    ("organ", INSTRUMENT, (150, 151, 152)),
    ("harpsichord", INSTRUMENT, (155,)),
    ("synthesizer", INSTRUMENT, (153, 154)),
    ("electric guitar", INSTRUMENT, (136,)),
    ("bass guitar", INSTRUMENT, (137,)),
    ("acoustic guitar", INSTRUMENT, (138, 141)),
    ("guitar", INSTRUMENT, (135, 139, 140)),
    ("banjo", INSTRUMENT, (142,)),
    ("sitar", INSTRUMENT, (143,)),
    ("mandolin", INSTRUMENT, (144,)),
    ("zither", INSTRUMENT, (145,)),
    ("ukulele", INSTRUMENT, (146,)),
    ("drums", INSTRUMENT, (157, 158, 159, 160, 161, 162, 163, 166, 167)),
    ("timpani", INSTRUMENT, (164,)),
    ("tabla", INSTRUMENT, (165,)),
    ("marimba", INSTRUMENT, (175,)),
    ("glockenspiel", INSTRUMENT, (176,)),
    ("vibraphone", INSTRUMENT, (177,)),
    ("steelpan", INSTRUMENT, (178,)),
    ("an orchestra", INSTRUMENT, (179,)),
    ("French horn", INSTRUMENT, (181,)),
    ("trumpet", INSTRUMENT, (182,)),
    ("trombone", INSTRUMENT, (183,)),
    ("violin", INSTRUMENT, (186, 187)),
    ("cello", INSTRUMENT, (188,)),
    ("double bass", INSTRUMENT, (189,)),
    ("strings", INSTRUMENT, (184, 185)),
    ("flute", INSTRUMENT, (191,)),
    ("saxophone", INSTRUMENT, (192,)),
    ("clarinet", INSTRUMENT, (193,)),
    ("harp", INSTRUMENT, (194,)),
    ("bells", INSTRUMENT, (195, 196, 197, 198, 200, 201, 202)),
    ("harmonica", INSTRUMENT, (203,)),
    ("accordion", INSTRUMENT, (204,)),
    ("bagpipes", INSTRUMENT, (205,)),
    ("didgeridoo", INSTRUMENT, (206,)),
    ("theremin", INSTRUMENT, (208,)),
    ("a singing bowl", INSTRUMENT, (209,)),
    ("brass", INSTRUMENT, (180,)),
    ("woodwinds", INSTRUMENT, (190,)),
    ("percussion", INSTRUMENT, (156, 168, 169, 170, 171, 172, 173, 174)),
    ("keyboard", INSTRUMENT, (147,)),
    ("plucked strings", INSTRUMENT, (134,)),
    # sounds
    ("breaking glass", SOUND, (435, 437, 464, 463, 436)),
    ("a dog barking", SOUND, (68, 69, 70, 71, 72, 73, 74, 75, 117)),
    ("a cat", SOUND, (76, 77, 78, 79, 80)),
    ("birdsong", SOUND, (106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116)),
    ("a rooster and chickens", SOUND, (93, 94, 95, 96, 97, 98)),
    ("ducks or geese", SOUND, (99, 100, 101, 102)),
    ("cattle", SOUND, (85, 86)),  # not Cowbell (87), which AudioSet files under Cattle: a bell, not a cow
    ("a horse", SOUND, (82, 83, 84)),
    ("sheep or goats", SOUND, (90, 91, 92)),
    ("a pig", SOUND, (88, 89)),
    ("a lion's roar", SOUND, (104, 105)),
    ("frogs", SOUND, (127, 128)),
    ("insects", SOUND, (121, 122, 123, 124, 125, 126)),
    ("rain", SOUND, (283, 284, 285)),
    ("thunder", SOUND, (280, 281)),
    ("ocean waves", SOUND, (288, 289)),
    ("running water", SOUND, (282, 286, 287, 364, 365, 366, 438, 439, 440, 442, 443, 444, 445, 446)),
    ("wind", SOUND, (277, 278, 279)),
    ("fire crackling", SOUND, (292, 293)),
    ("a siren", SOUND, (316, 317, 318, 319, 390, 391)),
    ("an alarm", SOUND, (382, 389, 393, 394, 304, 392)),
    ("a telephone ringing", SOUND, (383, 384, 385, 386, 387, 388)),
    ("a doorbell", SOUND, (349, 350)),
    ("knocking", SOUND, (353, 354)),
    ("a door", SOUND, (348, 351, 352, 356, 357)),
    ("a car horn", SOUND, (302, 303, 312)),
    ("a car", SOUND, (300, 301, 305, 306, 307, 308, 309)),
    ("traffic", SOUND, (321, 310, 315)),
    ("a motorcycle", SOUND, (320,)),
    ("a train", SOUND, (322, 323, 324, 325, 326, 327, 328)),
    ("an aircraft", SOUND, (329, 330, 331, 332, 333, 334)),
    ("a boat", SOUND, (295, 296, 297, 298, 299)),
    ("an engine", SOUND, (337, 338, 339, 340, 341, 342, 343, 344, 345, 346, 347)),
    ("footsteps", SOUND, (46, 47, 48)),
    ("applause", SOUND, (56, 57, 58, 62)),
    ("a cheering crowd", SOUND, (61,)),
    ("a crowd talking", SOUND, (63, 64, 65, 66)),
    ("an explosion", SOUND, (420, 429, 430)),
    ("gunshots", SOUND, (421, 422, 423, 424, 425)),
    ("fireworks", SOUND, (426, 427)),
    ("typing", SOUND, (378, 379, 380, 381)),
    ("a clock ticking", SOUND, (400, 401, 402)),
    ("power tools", SOUND, (412, 413, 414, 415, 416, 417, 418, 419)),
    ("dishes and cutlery", SOUND, (358, 359, 360)),
    ("frying food", SOUND, (361, 484)),
    ("a kitchen appliance", SOUND, (362, 363)),
    ("a vacuum cleaner", SOUND, (371,)),
    ("a hair dryer", SOUND, (367,)),
    ("a toilet flushing", SOUND, (368,)),
    ("a whistle", SOUND, (396, 397, 35)),
    ("beeps", SOUND, (475, 476)),
    # Bells outside music are sounds (a bicycle bell, a game-show ding; YAMNet's Ding had been in "beeps", Cowbell in
    # "cattle"); while music plays they are the instrument "bells" instead (`make_report`).
    ("a bell ringing", SOUND, (195, 196, 197, 198, 200, 201, 202, 477, 87)),
    ("a whip", SOUND, (466,)),
    ("a pure tone", SOUND, (495, 496)),
    ("white noise", SOUND, (507, 508, 509, 514, 515)),
    ("a mechanical fan or air conditioner", SOUND, (406, 407)),
    ("a bang or thud", SOUND, (454, 455, 460, 461, 462)),
    ("a wooden crack", SOUND, (431, 432, 433, 434)),
    ("a camera shutter", SOUND, (410, 411)),
    ("a cash register", SOUND, (408,)),
    ("a printer", SOUND, (409,)),
    ("a whoosh", SOUND, (453,)),
    ("a clang", SOUND, (478,)),
    ("a creak", SOUND, (480,)),
    ("rustling", SOUND, (481, 473, 474)),
    ("clicking", SOUND, (485, 486)),
    ("a rumble", SOUND, (487,)),
    ("a hum", SOUND, (490, 510)),
    ("an animal", SOUND, (67, 81, 103)),
]
# Generic sound groups and the specific groups under them in AudioSet's ontology (Animal > Domestic animals,
# Livestock, Wild animals > Dog, Cattle, Roaring cats, ...).
_CHILDREN = {"an animal": {"a dog barking", "a cat", "birdsong", "a rooster and chickens", "ducks or geese", "cattle",
                           "a horse", "sheep or goats", "a pig", "a lion's roar", "frogs", "insects"}}
NO_SPEECH_SCORE = 0.05  # YAMNet's mean speech score below which ...
HALLUCINATION_WORDS = 3  # ... a transcript this short is taken for Whisper's (recorded animals: 0.00-0.05),
HALLUCINATION_PROB = 0.5  # ... as is one whose words Whisper gives this mean probability or less
SPEECH_CLASSES = (0, 1, 2, 3, 4, 5)
MUSIC = 132
SILENCE = 494
GENRES = tuple(range(211, 271))  # Pop music .. Wedding music
MOODS = tuple(range(271, 277))  # Happy / Sad / Tender / Exciting / Angry / Scary music: the tagger's music-mood tags

# Thresholds on YAMNet's sigmoid scores, set on the labelled set in benchmarks/lite_events.py. The w8a8
# graph's logits come in steps of 0.757, so scores take the values sigmoid(0.757 k): 0.32, 0.5, 0.68, 0.82, ...
EVENT_PEAK = 0.6  # a sound group is present when one patch scores this (logit >= 0.757) ...
EVENT_SUSTAINED = 0.45  # ... or two patches in a row score this (logit >= 0): one patch at 0.5 is often noise
SPAN_THRESHOLD = 0.15  # its spans are the patches scoring this
MUSIC_PRESENT = 0.3  # the clip has music when the 'Music' class's 80th-percentile patch scores this
INSTRUMENT_MIN = 0.06  # an instrument's mean score over the music patches
SILENT_DBFS = -55.0  # a clip quieter than this (RMS) is silence


@dataclass(frozen=True)
class Sound:
    """A named group of AudioSet classes found in a clip."""

    name: str  # e.g. "breaking glass", "piano", "laughter"
    kind: str  # SOUND, VOCAL or INSTRUMENT
    score: float  # the group's highest patch score (0-1)
    spans: tuple[tuple[float, float], ...]  # (start, end) seconds where it scores high
    classes: tuple[str, ...]  # the AudioSet classes that fired, best first


@dataclass(frozen=True)
class Report:
    """Everything the lite model knows about one clip; answers are composed from it."""

    duration: float  # seconds of audio heard (at most 30 s in chat)
    hearing: Hearing  # transcript, language, word times, speech regions
    loudness_dbfs: float  # RMS of the whole clip
    speech_score: float  # YAMNet's mean score for speech classes
    music_score: float  # 80th percentile over patches of YAMNet's 'Music'
    sounds: tuple[Sound, ...] = ()  # non-speech sound events, strongest first
    vocal: tuple[Sound, ...] = ()  # laughter, crying, singing, ... strongest first
    instruments: tuple[Sound, ...] = ()  # while music plays, strongest first
    genres: tuple[tuple[str, float], ...] = ()  # AudioSet genre tags with mean score over music patches
    moods: tuple[tuple[str, float], ...] = ()  # the tagger's music-mood tags (Happy music, ...)
    tagged: bool = True  # False: no sound tagger was installed, so sounds and music are unknown
    voice: VoiceCues | None = None  # measured in the speech regions
    top: tuple[tuple[str, float], ...] = field(default=(), repr=False)  # the raw top AudioSet classes
    peak_dbfs: float = -180.0  # the loudest sample, dB relative to full scale
    music_spans: tuple[tuple[float, float], ...] = ()  # (start, end) seconds where the 'Music' class scores MUSIC_PRESENT
    # Levels of the clip's quietest and loudest tenth of 50 ms frames (10th / 90th percentiles, dBFS): its background
    # where it pauses, and its foreground (`frame_levels`).
    quietest_dbfs: float = -180.0
    loudest_dbfs: float = -180.0
    loudest_second: tuple[float, float, float] = (0.0, 0.0, -180.0)  # (start, end, dBFS) of the loudest 1 s window

    @property
    def has_speech(self) -> bool:
        return self.hearing.has_speech

    @property
    def has_music(self) -> bool:
        return self.music_score >= MUSIC_PRESENT

    @property
    def silent(self) -> bool:
        return self.loudness_dbfs < SILENT_DBFS and not self.has_speech

    @property
    def singing(self) -> bool:
        """Voice that the tagger calls singing more than speech (lyrics in the transcript)."""
        sung = next((v.score for v in self.vocal if v.name == "singing"), 0.0)
        return sung >= 0.3 and sung > self.speech_score

    def find(self, name: str) -> Sound | None:
        for s in (*self.sounds, *self.vocal, *self.instruments):
            if s.name == name:
                return s
        return None


def _spans(on: np.ndarray, tags: Tags, min_gap: float = 0.5) -> tuple[tuple[float, float], ...]:
    """Runs of True patches as (start, end) seconds: centre +- half a hop, joined across short gaps."""
    if not on.any():
        return ()
    hop = float(tags.times[1] - tags.times[0]) if len(tags.times) > 1 else 0.96
    centres = tags.times + 0.48
    out: list[list[float]] = []
    for i in np.nonzero(on)[0]:
        a = 0.0 if i == 0 else max(0.0, centres[i] - hop / 2)
        b = tags.duration if i == len(on) - 1 else min(tags.duration, centres[i] + hop / 2)
        if out and a - out[-1][1] <= min_gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((round(float(a), 2), round(float(b), 2)) for a, b in out)


def group_sounds(tags: Tags, kinds=(SOUND, VOCAL)) -> list[Sound]:
    """The GROUPS of `kinds` whose best patch reaches EVENT_PEAK, strongest first."""
    out, weight = [], {}
    for name, kind, classes in GROUPS:
        if kind not in kinds:
            continue
        scores = tags.probs[:, list(classes)]  # [T, k]
        per_patch = scores.max(axis=1)
        peak = float(per_patch.max()) if len(per_patch) else 0.0
        held = per_patch >= EVENT_SUSTAINED
        sustained = bool((held[1:] & held[:-1]).any()) if len(held) > 1 else False
        if peak < EVENT_PEAK and not sustained:
            continue
        fired = [tags.labels[c] for c in sorted(classes, key=lambda c: -tags.probs[:, c].max())
                 if tags.probs[:, c].max() >= SPAN_THRESHOLD]
        out.append(Sound(name, kind, round(peak, 3), _spans(per_patch >= SPAN_THRESHOLD, tags), tuple(fired)))
        weight[name] = float(per_patch[per_patch >= SPAN_THRESHOLD].sum())
    named = {s.name for s in out}
    # AudioSet's hierarchy: "Animal" scores wherever a dog or a rooster does, often higher. A parent is named
    # only when none of its children is: "a dog barking", not "an animal ... I also hear a dog barking".
    out = [s for s in out if not (named & _CHILDREN.get(s.name, set()))]
    # Strongest over its time course (the sum of its scores where it is heard), not by one patch's peak: a
    # horse neighing for a second outweighs a lion's roar tagged in one patch of it.
    return sorted(out, key=lambda s: -weight[s.name])


FRAME = SAMPLE_RATE // 20  # 50 ms


def frame_levels(samples: np.ndarray) -> tuple[float, float]:
    """(quietest, loudest) level in dBFS of float32 [n] 16 kHz `samples`: the 10th and 90th percentiles of its 50 ms
    frames' RMS levels (-180 for digital silence; the whole clip as one frame when it is shorter than one)."""
    n = max(1, len(samples) // FRAME)
    frames = np.asarray(samples[:n * FRAME] if len(samples) >= FRAME else samples, np.float64).reshape(n, -1)
    levels = 20 * np.log10(np.maximum(np.sqrt((frames ** 2).mean(axis=1)) if frames.size else np.zeros(n), 1e-9))
    return round(max(-180.0, float(np.percentile(levels, 10))), 1), round(max(-180.0, float(np.percentile(levels, 90))), 1)


def loudest_second(samples: np.ndarray, hop: float = 0.1) -> tuple[float, float, float]:
    """(start, end, dBFS): the 1 s window (the whole clip when shorter), every `hop` seconds, with the highest RMS level."""
    n, step = min(len(samples), SAMPLE_RATE), max(1, int(hop * SAMPLE_RATE))
    if n == 0:
        return 0.0, 0.0, -180.0
    power = np.concatenate([[0.0], np.cumsum(np.asarray(samples, np.float64) ** 2)])
    starts = np.arange(0, len(samples) - n + 1, step)
    means = (power[starts + n] - power[starts]) / n
    best = int(np.argmax(means))
    level = 10 * float(np.log10(max(float(means[best]), 1e-18)))
    start = int(starts[best])
    return round(start / SAMPLE_RATE, 2), round((start + n) / SAMPLE_RATE, 2), round(max(-180.0, level), 1)


def make_report(samples: np.ndarray, hearing: Hearing, tags: Tags, tagged: bool = True) -> Report:
    """The report of float32 [n] 16 kHz `samples`, given what Whisper heard and YAMNet's scores
    (`tagged=False`: no tagger was run, `tags` is empty)."""
    probs = tags.probs
    duration = len(samples) / SAMPLE_RATE
    speech = float(probs[:, list(SPEECH_CLASSES)].max(axis=1).mean()) if len(probs) else 0.0
    words = hearing.words
    if tagged and speech < NO_SPEECH_SCORE and words and (
            len(words) <= HALLUCINATION_WORDS or float(np.mean([w.prob for w in words])) < HALLUCINATION_PROB):
        # Whisper's "Thank you." in a pig's grunt: a few words, or unsure ones, where the tagger hears no speech.
        hearing = replace(hearing, text="", language=None, language_prob=0.0, words=(), raw_words=(), segments=())
    rms = float(np.sqrt(np.mean(np.asarray(samples, np.float64) ** 2))) if len(samples) else 0.0
    loud = round(20 * np.log10(max(rms, 1e-9)), 1)
    peak = round(20 * np.log10(max(float(np.max(np.abs(samples))) if len(samples) else 0.0, 1e-9)), 1)
    music_track = probs[:, MUSIC] if len(probs) else np.zeros(0)
    music = float(np.percentile(music_track, 80)) if len(music_track) else 0.0
    sounds, vocal = [], []
    for s in group_sounds(tags):
        (vocal if s.kind == VOCAL else sounds).append(s)
    instruments, genres, moods = [], [], []
    if music >= MUSIC_PRESENT:
        on = music_track >= MUSIC_PRESENT
        mean = probs[on].mean(axis=0) if on.any() else probs.mean(axis=0)
        for name, kind, classes in GROUPS:
            if kind != INSTRUMENT:
                continue
            score = float(mean[list(classes)].max())
            if score >= INSTRUMENT_MIN:
                fired = [tags.labels[c] for c in classes if mean[c] >= INSTRUMENT_MIN]
                per_patch = probs[:, list(classes)].max(axis=1)
                instruments.append(Sound(name, INSTRUMENT, round(score, 3), _spans(per_patch >= 2 * INSTRUMENT_MIN, tags),
                                         tuple(fired)))
        instruments.sort(key=lambda s: -s.score)
        # Generic names (keyboard, percussion, ...) only when no specific instrument was found.
        specific = [s for s in instruments if s.name not in _GENERIC]
        instruments = specific or instruments
        if any(i.name == "bells" for i in instruments):
            sounds = [s for s in sounds if s.name != "a bell ringing"]  # one name for one bell
        genres = sorted(((tags.labels[c], round(float(mean[c]), 3)) for c in GENRES if mean[c] >= 0.05),
                        key=lambda g: -g[1])[:4]
        moods = sorted(((tags.labels[c], round(float(mean[c]), 3)) for c in MOODS if mean[c] >= 0.05),
                       key=lambda g: -g[1])[:2]
    voice = None
    if hearing.has_speech:
        voice = measure_voice(samples, hearing.regions, hearing.words, hearing.language, hearing.text)
    top = tuple((lbl, round(s, 3)) for lbl, s in tags.top(8))
    music_spans = _spans(music_track >= MUSIC_PRESENT, tags) if music >= MUSIC_PRESENT else ()
    quietest, loudest = frame_levels(samples)
    return Report(round(duration, 2), hearing, loud, round(speech, 3), round(music, 3), tuple(sounds), tuple(vocal),
                  tuple(instruments), tuple(genres), tuple(moods), tagged, voice, top, peak, music_spans, quietest, loudest,
                  loudest_second(samples))


_GENERIC = {"keyboard", "percussion", "brass", "woodwinds", "plucked strings", "strings"}
