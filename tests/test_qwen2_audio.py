"""Qwen2-Audio's audio encoder and projector against transformers' (the reference, a test-only extra)."""

from __future__ import annotations

import pytest
import torch

from qwen_audio.errors import CheckpointError
from qwen_audio.models.qwen2_audio import AudioEncoder, AudioTowerConfig, feature_lengths

from .synthetic import nonzero_biases

transformers = pytest.importorskip("transformers", reason="the reference: pip install 'qwen-audio[test]'")
from transformers.masking_utils import create_bidirectional_mask  # noqa: E402
from transformers.models.qwen2_audio import modeling_qwen2_audio as hf  # noqa: E402

AUDIO = dict(num_mel_bins=8, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
             max_source_positions=50)
TEXT = dict(vocab_size=128, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    config = transformers.Qwen2AudioConfig(audio_config=AUDIO, text_config=TEXT)
    tower, projector = hf.Qwen2AudioEncoder(config.audio_config).eval(), hf.Qwen2AudioMultiModalProjector(config).eval()
    with torch.no_grad():
        for p in [*tower.parameters(), *projector.parameters()]:
            p.normal_(0, 0.3)
    ours = AudioEncoder(AudioTowerConfig.from_dict(config.audio_config.to_dict(), config.text_config.hidden_size))
    state = {f"audio_tower.{k}": v for k, v in tower.state_dict().items()}
    state |= {f"multi_modal_projector.{k}": v for k, v in projector.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    return ours.eval(), tower, projector


def reference(tower, projector, mels, frames):
    """transformers' own steps (Qwen2AudioModel.forward): lengths, the padding mask, the tower, the projector."""
    feature_mask = (torch.arange(mels.shape[-1])[None, :] < frames[:, None]).long()
    positions, n = tower._get_feat_extract_output_lengths(feature_mask.sum(-1))
    max_len = (mels.shape[-1] - 2) // 2 + 1
    keys = (torch.arange(max_len)[None, :] < positions[:, None]).long()
    mask = create_bidirectional_mask(config=tower.config, inputs_embeds=torch.zeros(len(mels), max_len, 1),
                                     attention_mask=keys)
    x = projector(tower(mels, attention_mask=mask).last_hidden_state)
    return [x[i, :int(k)] for i, k in enumerate(n)]


def test_features_of_clips_of_different_lengths(pair):
    ours, tower, projector = pair
    mels = torch.randn(3, 8, 100, generator=torch.Generator().manual_seed(1))
    frames = torch.tensor([100, 61, 7])  # a whole window, a part, a very short clip
    with torch.inference_mode():
        mine, theirs = ours.embed_audio(mels, frames), reference(tower, projector, mels, frames)
    assert [m.shape for m in mine] == [t.shape for t in theirs] == [(25, 48), (15, 48), (2, 48)]
    for m, t in zip(mine, theirs):
        assert (m - t).abs().max() <= 1e-5 * t.abs().max()


def test_a_clip_does_not_depend_on_the_others_in_its_batch(pair):
    ours, _, _ = pair
    mels = torch.randn(2, 8, 100, generator=torch.Generator().manual_seed(2))
    frames = torch.tensor([100, 40])
    with torch.inference_mode():
        together = ours.embed_audio(mels, frames)[1]
        alone = ours.embed_audio(mels[1:], frames[1:])[0]
    assert (together - alone).abs().max() <= 1e-5 * alone.abs().max()


def test_lengths_and_checks():
    positions, n = feature_lengths(torch.tensor([3000, 1, 2, 160]))
    assert positions.tolist() == [1500, 1, 1, 80] and n.tolist() == [750, 0, 0, 40]
    assert AudioTowerConfig.from_dict({"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
                                       "encoder_ffn_dim": 5120}, 4096) == AudioTowerConfig()
    with pytest.raises(CheckpointError, match="encoder_layers"):
        AudioTowerConfig.from_dict({"d_model": 8}, 16)
    with pytest.raises(ValueError, match="100 frames"):
        AudioEncoder(AudioTowerConfig.from_dict(AUDIO, 48)).audio_tower(torch.zeros(1, 8, 90), torch.tensor([45]))


@pytest.mark.parametrize("clip", ["1272-128104-0000.flac", "glass-breaking-151256.mp3", "music.wav"])
def test_log_mel_equals_the_feature_extractor(clip):
    from qwen_audio.audio import load_audio
    from qwen_audio.models.qwen2_audio import log_mel

    from .conftest import AUDIO, need_shared

    need_shared()
    samples = load_audio(AUDIO / clip)
    ref = transformers.WhisperFeatureExtractor(feature_size=128)(
        samples[:480000], sampling_rate=16000, return_tensors="np", padding="max_length", return_attention_mask=True)
    mel, frames = log_mel(torch.from_numpy(samples))
    assert frames == int(ref["attention_mask"].sum())
    assert abs(mel.numpy() - ref["input_features"][0]).max() <= 1e-5


AUDIO_ID = 100


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """(ours, transformers') Qwen2-Audio on one tiny random checkpoint written by save_pretrained."""
    import json

    from safetensors.torch import load_file

    from qwen_audio.models.qwen2_audio import Qwen2AudioLM, load_state

    torch.manual_seed(3)
    config = transformers.Qwen2AudioConfig(audio_config=AUDIO, text_config=TEXT, audio_token_index=AUDIO_ID)
    reference = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    nonzero_biases(reference, 0.3)
    folder = tmp_path_factory.mktemp("qwen2-audio")
    reference.save_pretrained(folder)
    ours = Qwen2AudioLM.from_dict(json.loads((folder / "config.json").read_text()))
    load_state(ours, load_file(folder / "model.safetensors"))
    return ours.eval(), reference


def test_logits_of_a_prompt_with_two_clips_equal_the_reference(whole):
    ours, reference = whole
    mels = torch.randn(2, 8, 100, generator=torch.Generator().manual_seed(4))
    frames = torch.tensor([100, 37])
    _, n = feature_lengths(frames)
    text = lambda k: torch.randint(0, 90, (k,), generator=torch.Generator().manual_seed(k))  # noqa: E731
    ids = torch.cat([text(5), torch.full((int(n[0]),), AUDIO_ID), text(3), torch.full((int(n[1]),), AUDIO_ID),
                     text(6)])[None]
    feature_mask = (torch.arange(100)[None, :] < frames[:, None]).long()
    with torch.inference_mode():
        mine = ours(ids, ours.embed_audio(mels, frames))
        theirs = reference(input_ids=ids, input_features=mels, feature_attention_mask=feature_mask).logits
    assert (mine - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_a_prompt_whose_audio_tokens_do_not_fit_its_clips_is_refused(whole):
    from qwen_audio.errors import PromptError

    ours, _ = whole
    feats = [torch.zeros(3, 48)]
    with pytest.raises(PromptError, match="2 <\\|AUDIO\\|> tokens in the prompt but 3 audio features"):
        ours.embed(torch.tensor([[1, AUDIO_ID, AUDIO_ID, 2]]), feats)


def test_checkpoint_names_of_both_transformers_versions():
    from qwen_audio.models.qwen2_audio import checkpoint_name

    assert checkpoint_name("language_model.model.layers.0.mlp.up_proj.weight") == "llm.model.layers.0.mlp.up_proj.weight"
    assert checkpoint_name("model.language_model.norm.weight") == "llm.model.norm.weight"
    assert checkpoint_name("language_model.lm_head.weight") == checkpoint_name("lm_head.weight") == "llm.lm_head.weight"
    assert checkpoint_name("model.audio_tower.conv1.weight") == checkpoint_name("audio_tower.conv1.weight")
    assert checkpoint_name("vision_tower.x") is None


def test_greedy_answers_through_the_engine_equal_the_reference_generate(whole):
    """Two Qwen2-Audio prompts written side by side by the engine's scheduler: each one's greedy tokens
    are transformers' `generate` for it alone."""
    from qwen_audio.engine import Engine, Prepared
    from qwen_audio.options import GenerationConfig

    ours, reference = whole
    engine = Engine(ours)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=8)
    g = torch.Generator().manual_seed(5)
    prompts, expected = [], []
    for frames in (100, 43):
        mels = torch.randn(1, 8, 100, generator=g)
        n = int(feature_lengths(torch.tensor([frames]))[1])
        words = torch.randint(0, 90, (7,), generator=g).tolist()
        ids = [*words[:4], *[AUDIO_ID] * n, *words[4:]]
        with torch.inference_mode():
            feats = ours.embed_audio(mels, torch.tensor([frames]))
            out = reference.generate(input_ids=torch.tensor([ids]), input_features=mels,
                                     feature_attention_mask=(torch.arange(100) < frames).long()[None],
                                     attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        expected.append(out[0, len(ids):].tolist())
        start = ids.index(AUDIO_ID)
        prompts.append(Prepared(ids, feats, [(start, start + n - 1, ("clip", frames))], 1.0, 8))
    streams = [engine.tokens(p, cfg, set()) for p in prompts]  # both submitted before either is read
    assert [list(s) for s in streams] == expected
    assert engine.scheduler.steps < 16  # the two answers shared steps
