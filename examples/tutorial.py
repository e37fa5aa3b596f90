"""The Qwen-Audio-Chat tutorial, run with qwen-audio: only the import lines differ.

    python examples/tutorial.py [MODEL] [AUDIO_DIR]

MODEL defaults to the hub's "Qwen/Qwen-Audio-Chat" (16 GB); any local checkpoint folder works.
AUDIO_DIR holds the tutorial's clips (default: assets/audio, as in the tutorial).
"""

import os
import sys

import torch

from qwen_audio import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # was: from transformers ...

MODEL = sys.argv[1] if len(sys.argv) > 1 else "Qwen/Qwen-Audio-Chat"
A = sys.argv[2] if len(sys.argv) > 2 else "assets/audio"
audio = lambda name: os.path.join(A, name)  # noqa: E731

# To make results reproducible, set a seed (or pass seed=... to chat).
torch.manual_seed(1234)

tokenizer = AutoTokenizer.from_pretrained(MODEL, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(MODEL, device_map="auto", trust_remote_code=True).eval()
model.generation_config = GenerationConfig.from_pretrained(MODEL, trust_remote_code=True)

# Multi-turn audio question answering
query = tokenizer.from_list_format([
    {'audio': audio('1272-128104-0000.flac')},
    {'text': 'what is that sound?'},
])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
query = tokenizer.from_list_format([
    {'text': 'Find the start time and end time of the word "middle classes"'},
])
response, history = model.chat(tokenizer, query=query, history=history)
print(response)

# Multilingual speech
query = tokenizer.from_list_format([{'audio': audio('es.mp3')}, {'text': 'Recognize the speech'}])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
response, history = model.chat(tokenizer, query=tokenizer.from_list_format([{'text': 'What is his emotion'}]), history=history)
print(response)
query = tokenizer.from_list_format([{'audio': audio('example-重庆话.wav')}, {'text': 'Recognize the speech'}])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)

# Sounds, and reasoning about them
query = tokenizer.from_list_format([{'audio': audio('glass-breaking-151256.mp3')}, {'text': 'What is it'}])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
query = tokenizer.from_list_format([
    {'audio': audio('glass-breaking-151256.mp3')},
    {'text': 'Recognize the sound information and assume that the sound is happening around the user. '
             'Please provide the user with some handling suggestions.'},
])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)

# Music (the clip is 96 s: the model hears the first 30 s, and says so in a warning)
query = tokenizer.from_list_format([{'audio': audio('music.wav')}, {'text': 'what is the instrument'}])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
query = "Describe the music in detail and give me some recommendations for similar music."
response, history = model.chat(tokenizer, query=query, history=history)
print(response)

# Several clips in one question
query = tokenizer.from_list_format([
    {'audio': audio('你没事吧-轻松.wav')},
    {'audio': audio('你没事吧-消极.wav')},
    {'text': 'Is there any difference in the emotions of these two audio?'},
])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
query = tokenizer.from_list_format([
    {'audio': audio('glass-breaking-151256.mp3')},
    {'audio': audio('你没事吧-轻松.wav')},
    {'text': 'based on these two audio, write a story'},
])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)

# Grounding
query = tokenizer.from_list_format([
    {'audio': audio('1089_134686_000007_000004.wav')},
    {'text': 'Find the word "companionless"'},
])
response, history = model.chat(tokenizer, query=query, history=None)
print(response)
query = tokenizer.from_list_format([{'text': 'find the person name'}])
response, history = model.chat(tokenizer, query=query, history=history)
print(response)
