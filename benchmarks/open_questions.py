"""A written set of open questions for lite's LLM, with what an answer must carry and must not say.

Each question names its clips (the tutorial's, or mixes `lite_open.py` makes from them: `mix:speech+music`,
`mix:speech+glass`), a kind (advice, description, recommendation, story, comparison, refusal), `must`: regular
expressions that must all match the LLM's part of the answer (one fact each; alternatives inside one pattern),
and `must_not`: patterns none of which may match. `GLOBAL_MUST_NOT` applies to every answer. Patterns are
matched case-insensitively. A Chinese question's answer must also be mostly Chinese.

What the clips are (the facts a faithful answer can use): glass-breaking-151256.mp3 glass shattering, no
speech; music.wav a solo piano piece, no voice; 1272-128104-0000.flac a man reading "Mister Quilter is the
apostle of the middle classes and we are glad to welcome his gospel"; 1089_134686_000007_000004.wav a man
reading "The music came nearer and he recalled the words, the words of Shelley's fragment upon the moon
wandering companionless, pale for weariness" (Joyce, A Portrait of the Artist); es.mp3 a man in Spanish
suggesting fun activities such as water sports; example-重庆话.wav a man in Chongqing dialect proposing to
rent bicycles, which exercises the body and lifts the mood; 你没事吧-轻松/消极.wav a woman asking "are you
okay?" (light-hearted / downcast).

Kept out of the tests: these are judgements of a model's free text, printed as a pass share by the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpenQuestion:
    clips: tuple[str, ...]
    question: str
    kind: str
    must: tuple[str, ...]
    must_not: tuple[str, ...] = ()
    # Earlier turns of the same conversation, asked first (each: the clips it brings, its question); `clips` are then
    # those the judged question brings (none for a follow-up about earlier clips).
    before: tuple[tuple[tuple[str, ...], str], ...] = ()


GLASS, MUSIC = "glass-breaking-151256.mp3", "music.wav"
QUILTER, SHELLEY = "1272-128104-0000.flac", "1089_134686_000007_000004.wav"
SPANISH, CHONGQING = "es.mp3", "example-重庆话.wav"
OKAY_LIGHT, OKAY_DOWN = "你没事吧-轻松.wav", "你没事吧-消极.wav"
SPEECH_MUSIC, SPEECH_GLASS = "mix:speech+music", "mix:speech+glass"

# Not about the situation heard: code, audio software, treating the sound as a file, refusing to listen.
GLOBAL_MUST_NOT = (
    r"```", r"\bpython\b|pydub|librosa|audacity", r"audio files?\b|sound files?\b|the recording software",
    r"\bpress (?:the|a) ", r"\bas an ai\b|language model", r"(?:can ?not|can't|unable to) (?:hear|listen|play)",
    r"音频文件|代码|无法(?:听|播放)",
)
SAFETY = r"careful|caution|safe|injur|hurt|cut|shoe|glove|sweep|broom|clean|vacuum|shard|piece"
REFUSE = r"not (?:possible|able|clear|known|mentioned|stated|given|provided|specified)|cannot|can't|unknown|no way|" \
         r"don't know|do not know|unable|impossible|no information|doesn't (?:say|mention)|does not (?:say|mention)"
COMPOSERS = r"chopin|debussy|satie|beethoven|mozart|bach|schumann|liszt|schubert|einaudi|rachmaninoff|" \
            r"tchaikovsky|haydn|mendelssohn|brahms|gymnop|clair de lune|nocturne|für elise|fur elise|moonlight"
NO_VOICE_IN_MUSIC = r"\blyrics\b|\bsinger\b|\bvocals?\b|guitar|violin|drums|saxophone"

QUESTIONS: tuple[OpenQuestion, ...] = (
    # ---- advice about the situation heard (English)
    OpenQuestion((GLASS,), "What is that sound? What should I do?", "advice", (r"glass|shatter", SAFETY)),
    OpenQuestion((GLASS,), "Recognize the sound information and assume that the sound is happening around the user. "
                 "Please provide the user with some handling suggestions.", "advice", (r"glass|shatter", SAFETY)),
    OpenQuestion((GLASS,), "I heard this in my kitchen late at night. Should I be worried, and what should I check?",
                 "advice", (r"glass|shatter|broke", r"check|look|safe|careful|light|lock|window|intruder|police")),
    OpenQuestion((GLASS,), "My child is in the next room and I just heard this. What do I do first?", "advice",
                 (r"glass|shatter|broke", r"child|kid|son|daughter", r"check|safe|hurt|injur|away|careful")),
    OpenQuestion((SPEECH_GLASS,), "Something happened while the man was speaking. What should he do now?", "advice",
                 (r"glass|shatter|broke", SAFETY)),
    OpenQuestion((QUILTER,), "How should I reply to this speaker?", "advice",
                 (r"quilter|gospel|middle class|apostle|welcome",)),
    OpenQuestion((SPANISH,), "What is the speaker suggesting? Reply to them with an idea of your own.", "advice",
                 (r"water|aquatic|sport|swim|surf|kayak|activit|deporte",)),
    OpenQuestion((CHONGQING,), "What does the speaker propose, and is it a good idea?", "advice",
                 (r"bike|bicycle|cycling|ride|riding", r"exercise|health|fit|mood|body")),
    # ---- description
    OpenQuestion((MUSIC,), "Describe the music in detail and give me some recommendations for similar music.",
                 "description", (r"piano", COMPOSERS), (NO_VOICE_IN_MUSIC, r"hotel california|shakespeare")),
    OpenQuestion((MUSIC,), "What mood does this music create, and what kind of scene would it fit?", "description",
                 (r"piano|music", r"calm|gentle|relax|light|playful|cheer|peace|soft|happy|joy|bright|melanchol|sad|"
                  r"romantic|dream|nostalg|elegant|lively"), (NO_VOICE_IN_MUSIC,)),
    OpenQuestion((SHELLEY,), "What might this passage be from, and what mood does it set?", "description",
                 (r"music|moon|shelley|poem|poet|wander|companionless|weariness",)),
    OpenQuestion((SPEECH_MUSIC,), "What is going on in this clip, and what kind of event could it be?", "description",
                 (r"music|piano", r"speak|speech|talk|voice|quilter|gospel|apostle|man")),
    # ---- recommendations
    OpenQuestion((GLASS,), "What should I buy or use to clean this up?", "recommendation",
                 (r"broom|dustpan|vacuum|glove|tape|bag|brush|bread|towel",), (r"microphone|headphone|speaker system",)),
    OpenQuestion((MUSIC,), "Recommend three similar pieces of music.", "recommendation", (COMPOSERS,),
                 (NO_VOICE_IN_MUSIC, r"hotel california|shakespeare")),
    OpenQuestion((SHELLEY,), "Recommend a book for someone who likes this passage.", "recommendation",
                 (r"shelley|poe|romantic|joyce|portrait|moon|keats|byron|wordsworth|novel",)),
    # ---- stories
    OpenQuestion((GLASS, OKAY_LIGHT), "based on these two audio, write a story", "story",
                 (r"glass|shatter|broke", r"okay|ok\b|alright|all right|are you|没事")),
    OpenQuestion((MUSIC, QUILTER), "Write a short story that uses both clips.", "story",
                 (r"piano|music", r"quilter|gospel|middle class|apostle|speech|speaker|man")),
    OpenQuestion((GLASS,), "Write a short poem about this sound.", "story", (r"glass|shatter|break|broke|shard",)),
    OpenQuestion((SPANISH, GLASS), "Tell a story connecting these two clips.", "story",
                 (r"water|aquatic|sport|activit|spanish|deporte", r"glass|shatter|broke")),
    # ---- comparison
    OpenQuestion((MUSIC, GLASS), "Compare these two clips. Which one would wake a sleeping baby, and why?",
                 "comparison", (r"glass|shatter|break", r"piano|music")),
    OpenQuestion((QUILTER, SHELLEY), "Compare what the two speakers talk about.", "comparison",
                 (r"quilter|gospel|middle class|apostle", r"music|moon|shelley|words|companionless")),
    # ---- where the facts cannot answer: say so
    OpenQuestion((MUSIC,), "What is the name of the pianist, and in which city was this recorded?", "refusal",
                 (REFUSE,), (r"recorded (?:in|at) [A-Z]",)),
    OpenQuestion((QUILTER,), "How old is the speaker, and what is his phone number?", "refusal", (REFUSE,),
                 (r"\b\d{3}[- ]?\d{3,4}[- ]?\d{4}\b", r"\bis \d{2} years old")),
    # ---- Chinese
    OpenQuestion((GLASS,), "这是什么声音？我该怎么办？", "advice", (r"玻璃", r"小心|安全|清理|清扫|手套|受伤|鞋|碎片")),
    OpenQuestion((GLASS,), "请根据这段音频给我一些安全建议。", "advice", (r"玻璃", r"小心|安全|清理|清扫|手套|受伤|鞋|碎片")),
    OpenQuestion((OKAY_DOWN,), "这个人怎么了？我应该怎么回应她？", "advice", (r"没事|关心|问|安慰|帮助|还好",)),
    OpenQuestion((CHONGQING,), "说话的人提议做什么？这个主意好吗？", "advice", (r"自行车|骑", r"锻炼|健康|心情|身体")),
    OpenQuestion((SPANISH,), "这个人在建议什么活动？给我一些具体的建议。", "advice",
                 (r"水上|运动|游泳|冲浪|潜水|皮划艇|水|活动",)),
    OpenQuestion((MUSIC,), "描述一下这段音乐，并推荐一些类似的音乐。", "description",
                 (r"钢琴", COMPOSERS + r"|肖邦|德彪西|萨蒂|贝多芬|莫扎特|巴赫|舒曼|李斯特|舒伯特|古典"),
                 (r"歌词|歌手|吉他|小提琴|鼓",)),
    OpenQuestion((GLASS, OKAY_LIGHT), "根据这两段音频写一个故事。", "story", (r"玻璃", r"没事|还好|关心")),
    OpenQuestion((MUSIC, GLASS), "比较这两段音频，哪一段更适合睡前听？为什么？", "comparison", (r"钢琴|音乐", r"玻璃")),
    OpenQuestion((MUSIC,), "这位钢琴家叫什么名字？", "refusal", (r"无法|不知道|不清楚|没有|不能|未知|没有提到|不确定",)),
    # ---- follow-ups: the clips came with earlier questions that lite answered itself
    OpenQuestion((), "What should I do?", "follow-up", (r"glass|shatter|broke", SAFETY),
                 before=(((GLASS,), "what is that sound?"),)),
    OpenQuestion((), "Recommend three similar pieces.", "follow-up", (COMPOSERS,),
                 (NO_VOICE_IN_MUSIC, r"hotel california|shakespeare"),
                 before=(((MUSIC,), "What instrument is this?"),)),
    OpenQuestion((), "Write a short story that uses both clips.", "follow-up",
                 (r"piano|music", r"quilter|gospel|middle class|apostle|speech|speaker|man"),
                 before=(((MUSIC,), "What instrument is this?"), ((QUILTER,), "What does he say?"))),
    OpenQuestion((), "我该怎么办？", "follow-up", (r"玻璃", r"小心|安全|清理|清扫|手套|受伤|鞋|碎片"),
                 before=(((GLASS,), "这是什么声音？"),)),
)
