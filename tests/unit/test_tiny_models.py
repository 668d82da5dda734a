"""The estimator's and decomposer's model code on tiny models built from a config (a 1-layer
BERT with MiniLM's width, a 2-layer Llama with a byte-level tokenizer and SmolLM2's chat
format): training, evaluation, saving and loading are tested without the shipped weights,
which the integration tests use."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

CHAT = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """MiniLM's shape where the head depends on it (hidden 384), one small layer, a word vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from triton_models.estimator.estimator_net import EMBED_DIM
    d = tmp_path_factory.mktemp("tiny-bert")
    words = "software data_ml infrastructure research generic design build test deploy review gather refine " \
            "requirements system architecture interfaces implement integrate release acceptance verify " \
            "objective backend service data store pipeline model train evaluate | and of the".split()
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]))
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=EMBED_DIM, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    d = tmp_path_factory.mktemp("tiny-llama")
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHAT
    tok.save_pretrained(d)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 bos_token_id=tok.bos_token_id)).save_pretrained(d)
    return str(d)


def test_estimator_untrained_head_is_the_heuristic_and_training_saves_what_loads(tiny_bert, tmp_path, monkeypatch):
    from triton_models import history, repository, training
    from triton_models.estimator import estimator_net as net
    monkeypatch.setattr(net, "base_model_path", lambda: tiny_bert)
    examples = history.synthetic(12, seed=4)
    train, held = history.split(examples)
    repo = repository.prepare(tmp_path / "repo", ("estimator",))
    tok, model, head = training.load_version(repo / "estimator" / "1")
    q, p = training.predict(tok, model, head, held)
    assert torch.exp(q[:, 1]).numpy() == pytest.approx([e.task.template_hours for e in held], rel=1e-4)
    assert p.numpy() == pytest.approx([net.PRIOR_FAILURE] * len(held), rel=1e-4)

    losses: list[float] = []
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    tok, lora, head = training.fit(train, epochs=4, lora=True, log=lambda s: losses.append(float(s.split()[-1])))
    assert losses[-1] < losses[0]                                   # it learns
    base = {k.replace("base_model.model.", ""): v for k, v in lora.state_dict().items() if "lora_" not in k}
    base = {k.replace(".base_layer", ""): v for k, v in base.items()}
    compared = [k for k in base if k in frozen]
    assert len(compared) > 10 and all(torch.equal(frozen[k], base[k]) for k in compared)   # only the adapter moved
    assert any("lora_" in k for k in lora.state_dict())
    ev = training.evaluate(tok, lora, head, held)
    version = training.write_version(repo, lora, head, ev, 1, {})
    assert (repo / "estimator" / str(version) / "adapter" / "adapter_config.json").exists()
    again = training.predict(*training.load_version(repo / "estimator" / str(version)), held)[0]
    assert again.numpy() == pytest.approx(training.predict(tok, lora, head, held)[0].numpy(), abs=1e-4)


def test_decomposer_batches_label_only_the_answer_and_lora_training_moves_only_the_adapter(tiny_llama, monkeypatch):
    from triton_models import decomposer_training as D
    from triton_models.decomposer import decomposer_net as net
    monkeypatch.setattr(net, "BASE", tiny_llama)
    pairs = D.synthetic_pairs(6, seed=2)
    tok, model = net.load()
    ids, _, labels = D._batch(tok, pairs[:2])
    for row, lab in zip(ids, labels):
        answer = [int(t) for t, y in zip(row, lab) if y != -100]
        assert tok.decode(answer).endswith("<|im_end|>")          # the answer and its end of turn, nothing else
        assert tok.decode(answer[:-1]) in {a for _, a in pairs[:2]}
    texts = net.generate(tok, model, [g for g, _ in pairs[:2]], max_new_tokens=5)
    assert len(texts) == 2 and all(json.loads(t)["tasks"] for t in texts)   # structured: always JSON
    rate, why = D.valid_rate(texts, [g for g, _ in pairs[:2]])
    assert rate == 0.0 and set(why) == {"objectives_not_covered"}   # an untrained model's names cover nothing

    losses: list[float] = []
    tok, lora = D.fit(pairs, steps=8, batch=2, lr=5e-3, log=lambda s: losses.append(float(s.split()[-1])))
    assert losses[-1] < losses[0]
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)


def test_decomposer_adapter_saved_is_the_adapter_loaded(tiny_llama, tmp_path, monkeypatch):
    from triton_models import decomposer_training as D
    from triton_models.decomposer import decomposer_net as net
    monkeypatch.setattr(net, "BASE", tiny_llama)
    pairs = D.synthetic_pairs(4, seed=3)
    tok, lora = D.fit(pairs, steps=3, batch=2, lr=5e-2, log=lambda *_: None)
    lora.save_pretrained(str(tmp_path / "adapter"))
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    enc = tok([net.prompt(tok, pairs[0][0])], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        want = lora(**enc).logits
        _, merged = net.load(tmp_path / "adapter")
        got = merged(**enc).logits
        _, plain = net.load()
        base = plain(**enc).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(base, want, atol=1e-4)
