"""Model families beside the v1 model (`qwen_audio.llm`): `qwen2` is the Qwen2 decoder that Qwen2-Audio
and lite's Qwen2.5 are built on."""
