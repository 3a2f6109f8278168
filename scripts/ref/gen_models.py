#!/usr/bin/python3
"""gen_models.py - reference models and training traces for spry's reference tests.

    /usr/bin/python3 scripts/ref/gen_models.py --out DIR [--arch gpt2|bloom|bert|all]

Builds tiny GPT-2, BLOOM and BERT models in plain PyTorch (no `transformers`) that
reproduce Hugging Face's GPT2LMHeadModel, BloomForCausalLM and BertForMaskedLM exactly:
same parameter names (with the "transformer." / "bert." prefix, as save_pretrained
writes them; the tied lm_head / MLM decoder is not written), same layouts (GPT-2 Conv1D
weights are [in, out], BLOOM and BERT nn.Linear weights are [out, in]), same
arithmetic. For each arch it writes DIR/<arch>/:

    config.json        Hugging Face style config
    model.safetensors  the initial weights, F32
    ref.safetensors    tokens, logits, loss, grad.<param>, hidden.*, greedy (a 4-token prompt and
                       20 greedy tokens, no cache; causal archs only), and a 10-step
                       AdamW trace (adamw.losses, adamw.grad_norms, adamw.final.<param>)

gpt2 and bloom are causal LMs trained on next-token prediction of `tokens`; bert is a
masked LM: its batch also holds attention_mask (row 1 ends in padding), token_type_ids
and labels (-100 = not counted), and the loss is the MLM cross entropy over the labelled
positions.

The weights are initialised in float32 (so model.safetensors is the exact start
point), then the model is cast to float64 and every reference value is computed in
float64 and rounded once to float32 when stored. See docs/reference-tests.md.

The module classes (GPT2LMHeadModel, BloomForCausalLM) are also imported by
bench/train_pytorch.py.
"""

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

SEED = 1234
B, T = 2, 7
GREEDY_PROMPT, GREEDY_NEW = 4, 20  # ref["greedy"]: tokens[0, :4] and 20 greedy tokens after it
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
CLIP = 1.0
STEPS = 10

GPT2_CONFIG = dict(vocab_size=101, n_positions=32, n_embd=30, n_layer=2, n_head=3)
BLOOM_CONFIG = dict(vocab_size=97, hidden_size=36, n_layer=2, n_head=6)
BERT_CONFIG = dict(vocab_size=103, hidden_size=30, num_hidden_layers=2, num_attention_heads=3,
                   intermediate_size=44, max_position_embeddings=32, type_vocab_size=2,
                   layer_norm_eps=1e-12)
BERT_PAD = 2                       # row 1: the last 2 positions are padding (attention_mask 0)
BERT_TYPE1_FROM = 3                # row 1: token_type_ids 0 for t < 3, then 1 (row 0: all 0)
BERT_LABELED = [(0, 1), (0, 4), (0, 6), (1, 0), (1, 2), (1, 3)]   # (b, t) with a label


# ----------------------------------------------------------------------------- GPT-2

class Conv1D(nn.Module):
    """HF's Conv1D: weight is [in, out]; y = x @ W + b."""

    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.empty(nf))

    def forward(self, x):
        y = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return y.view(*x.shape[:-1], self.weight.size(1))


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c["n_head"]
        self.n_embd = c["n_embd"]
        self.c_attn = Conv1D(self.n_embd, 3 * self.n_embd)
        self.c_proj = Conv1D(self.n_embd, self.n_embd)
        n = c["n_positions"]
        self.register_buffer("causal", torch.tril(torch.ones(n, n, dtype=torch.bool)),
                             persistent=False)

    def forward(self, x):
        b, t, C = x.shape
        h = self.n_head
        d = C // h
        q, k, v = self.c_attn(x).split(C, dim=2)          # three C-wide chunks
        q = q.view(b, t, h, d).transpose(1, 2)             # heads contiguous in a chunk
        k = k.view(b, t, h, d).transpose(1, 2)
        v = v.view(b, t, h, d).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-1, -2))
        att = att / torch.full([], d ** 0.5, dtype=att.dtype)  # scale_attn_weights
        att = att.masked_fill(~self.causal[:t, :t], torch.finfo(att.dtype).min)
        att = F.softmax(att, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, C)
        return self.c_proj(y)


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["n_embd"]
        inner = c.get("n_inner") or 4 * C
        self.c_fc = Conv1D(C, inner)
        self.c_proj = Conv1D(inner, C)

    def forward(self, x):
        # gelu_new == 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        eps = c.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(c["n_embd"], eps=eps)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"], eps=eps)
        self.mlp = GPT2MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList([GPT2Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=c.get("layer_norm_epsilon", 1e-5))

    def forward(self, idx, acts=None):
        t = idx.size(1)
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        if acts is not None:
            acts["hidden.embed"] = x
        for i, blk in enumerate(self.h):
            x = blk(x)
            if acts is not None:
                acts[f"hidden.h.{i}"] = x
        x = self.ln_f(x)
        if acts is not None:
            acts["hidden.ln_f"] = x
        return x


class GPT2LMHeadModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = GPT2Model(c)

    def forward(self, idx, acts=None):
        h = self.transformer(idx, acts)
        return F.linear(h, self.transformer.wte.weight)    # tied lm_head


# ----------------------------------------------------------------------------- BLOOM

def alibi_slopes(n_head):
    """Exactly HF's build_alibi_tensor slopes (computed in float32 as HF does)."""
    cp2 = 2 ** math.floor(math.log2(n_head))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(cp2) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + cp2, dtype=torch.int32))
    if cp2 != n_head:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * cp2) - 3))), dtype=torch.float32)
        rem = min(cp2, n_head - cp2)
        extra = torch.pow(extra_base, torch.arange(1, 1 + 2 * rem, 2, dtype=torch.int32))
        slopes = torch.cat([slopes, extra], dim=0)
    return slopes


def build_alibi(b, t, n_head, dtype):
    """(b*n_head, 1, t): slope_h * key_position (no padding: positions 0..t-1)."""
    mask = torch.ones(b, t, dtype=torch.long)
    arange = ((mask.cumsum(dim=-1) - 1) * mask)[:, None, :]
    alibi = alibi_slopes(n_head)[..., None] * arange
    return alibi.reshape(b * n_head, 1, t).to(dtype)


def bloom_gelu_forward(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


class BloomGeLU(torch.autograd.Function):
    """HF's training-mode GeLUFunction: the forward above, its own backward formula."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return bloom_gelu_forward(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        th = torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x))
        ff = 0.5 * x * ((1 - th * th) * (0.79788456 + 0.1070322243 * x * x)) + 0.5 * (1 + th)
        return ff * g


class BloomAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c["n_head"]
        C = c["hidden_size"]
        self.head_dim = C // self.n_head
        self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        self.query_key_value = nn.Linear(C, 3 * C)
        self.dense = nn.Linear(C, C)

    def forward(self, x, residual, alibi, causal):
        b, t, C = x.shape
        h, d = self.n_head, self.head_dim
        fused = self.query_key_value(x).view(b, t, h, 3, d)   # per-head [q|k|v]
        q = fused[..., 0, :].transpose(1, 2).reshape(b * h, t, d)
        k = fused[..., 1, :].transpose(1, 2).reshape(b * h, t, d).transpose(-1, -2)
        v = fused[..., 2, :].transpose(1, 2).reshape(b * h, t, d)
        scores = alibi.baddbmm(batch1=q, batch2=k, beta=1.0, alpha=self.inv_norm_factor)
        scores = scores.view(b, h, t, t)
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        # HF: softmax in fp32, cast back. In the float64 reference it stays float64.
        sm_dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
        probs = F.softmax(scores, dim=-1, dtype=sm_dtype).to(q.dtype)
        ctx = torch.bmm(probs.view(b * h, t, t), v)
        ctx = ctx.view(b, h, t, d).permute(0, 2, 1, 3).reshape(b, t, C)
        return self.dense(ctx) + residual


class BloomMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        self.dense_h_to_4h = nn.Linear(C, 4 * C)
        self.dense_4h_to_h = nn.Linear(4 * C, C)

    def forward(self, x, residual):
        return self.dense_4h_to_h(BloomGeLU.apply(self.dense_h_to_4h(x))) + residual


class BloomBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, eps = c["hidden_size"], c.get("layer_norm_epsilon", 1e-5)
        self.input_layernorm = nn.LayerNorm(C, eps=eps)
        self.self_attention = BloomAttention(c)
        self.post_attention_layernorm = nn.LayerNorm(C, eps=eps)
        self.mlp = BloomMLP(c)

    def forward(self, x, alibi, causal):
        # apply_residual_connection_post_layernorm = False: residuals are pre-LN inputs
        x = self.self_attention(self.input_layernorm(x), x, alibi, causal)
        return self.mlp(self.post_attention_layernorm(x), x)


class BloomModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, eps = c["hidden_size"], c.get("layer_norm_epsilon", 1e-5)
        self.n_head = c["n_head"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], C)
        self.word_embeddings_layernorm = nn.LayerNorm(C, eps=eps)
        self.h = nn.ModuleList([BloomBlock(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(C, eps=eps)

    def forward(self, idx, acts=None):
        b, t = idx.shape
        x = self.word_embeddings_layernorm(self.word_embeddings(idx))
        if acts is not None:
            acts["hidden.embed"] = x
        alibi = build_alibi(b, t, self.n_head, x.dtype)
        causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
        for i, blk in enumerate(self.h):
            x = blk(x, alibi, causal)
            if acts is not None:
                acts[f"hidden.h.{i}"] = x
        x = self.ln_f(x)
        if acts is not None:
            acts["hidden.ln_f"] = x
        return x


class BloomForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = BloomModel(c)

    def forward(self, idx, acts=None):
        h = self.transformer(idx, acts)
        return F.linear(h, self.transformer.word_embeddings.weight)   # tied lm_head


# ----------------------------------------------------------------------------- BERT

class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        # HF: padding_idx=pad_token_id, so lookups of token 0 give no gradient to row 0
        # (row 0 still gets the tied decoder's gradient)
        self.word_embeddings = nn.Embedding(c["vocab_size"], C, padding_idx=c.get("pad_token_id", 0))
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], C)
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], C)
        self.LayerNorm = nn.LayerNorm(C, eps=c["layer_norm_eps"])

    def forward(self, idx, token_type_ids):
        t = idx.size(1)
        pos = torch.arange(t, device=idx.device)[None, :]
        # HF's order: (word + token_type) + position
        x = self.word_embeddings(idx) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(pos)
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        self.n_head = c["num_attention_heads"]
        self.head_dim = C // self.n_head
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)

    def forward(self, x, ext_mask):
        b, t, C = x.shape
        h, d = self.n_head, self.head_dim
        q = self.query(x).view(b, t, h, d).permute(0, 2, 1, 3)
        k = self.key(x).view(b, t, h, d).permute(0, 2, 1, 3)
        v = self.value(x).view(b, t, h, d).permute(0, 2, 1, 3)
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(d)
        scores = scores + ext_mask                        # (b, 1, 1, t): 0 or finfo.min
        probs = F.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(b, t, C)


class BertSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        self.dense = nn.Linear(C, C)
        self.LayerNorm = nn.LayerNorm(C, eps=c["layer_norm_eps"])

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, ext_mask):
        return self.output(self.self(x, ext_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))                      # hidden_act "gelu": exact erf GELU


class BertOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        self.dense = nn.Linear(c["intermediate_size"], C)
        self.LayerNorm = nn.LayerNorm(C, eps=c["layer_norm_eps"])

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, ext_mask):
        # post-LayerNorm: a = LN1(x + attn(x)); out = LN2(a + mlp(a))
        a = self.attention(x, ext_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])


class BertModel(nn.Module):
    """BertModel(add_pooling_layer=False), as BertForMaskedLM builds it."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)

    def forward(self, idx, attention_mask=None, token_type_ids=None, acts=None):
        if attention_mask is None:
            attention_mask = torch.ones_like(idx)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(idx)
        x = self.embeddings(idx, token_type_ids)
        if acts is not None:
            acts["hidden.embed"] = x
        # HF get_extended_attention_mask: (1 - mask[:, None, None, :]) * finfo(dtype).min
        ext = attention_mask[:, None, None, :].to(dtype=x.dtype)
        ext = (1.0 - ext) * torch.finfo(x.dtype).min
        for i, blk in enumerate(self.encoder.layer):
            x = blk(x, ext)
            if acts is not None:
                acts[f"hidden.h.{i}"] = x
        return x


# random-LTD on an encoder, DeepSpeed's semantics (notes 4.3-4.4): layer BERT_LTD_LAYER runs on
# the kept tokens only; the extended mask is gathered on rows and columns with the kept indices;
# its outputs overwrite the kept rows, dropped rows pass through.
BERT_LTD_LAYER = 1
BERT_LTD_KEPT = [[0, 2, 3, 5, 6], [1, 2, 4, 5, 6]]   # row 1 keeps its two padded positions


def bert_ltd_logits(model, idx, attention_mask, token_type_ids):
    bert = model.bert
    x = bert.embeddings(idx, token_type_ids)
    b, t = idx.shape
    ext = attention_mask[:, None, None, :].to(dtype=x.dtype)
    ext = ((1.0 - ext) * torch.finfo(x.dtype).min).expand(b, 1, t, t)   # (B, 1, T, T)
    kept = torch.tensor(BERT_LTD_KEPT, dtype=torch.int64)
    for i, blk in enumerate(bert.encoder.layer):
        if i != BERT_LTD_LAYER:
            x = blk(x, ext)
            continue
        g = kept[:, :, None].expand(-1, -1, x.size(-1))
        part = torch.gather(x, 1, g)                                       # (B, r, C)
        sub = torch.stack([ext[j][:, kept[j], :][:, :, kept[j]] for j in range(b)])   # (B, 1, r, r)
        x = x.scatter(1, g, blk(part, sub))
    pred = model.cls.predictions
    return F.linear(pred.transform(x), bert.embeddings.word_embeddings.weight, pred.bias)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c["hidden_size"]
        self.dense = nn.Linear(C, C)
        self.LayerNorm = nn.LayerNorm(C, eps=c["layer_norm_eps"])

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        # the decoder is Linear(C, V) with weight tied to word_embeddings and bias = self.bias:
        # no module of its own here, so each tensor is one parameter
        self.bias = nn.Parameter(torch.zeros(c["vocab_size"]))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)


class BertForMaskedLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.bert = BertModel(c)
        self.cls = BertOnlyMLMHead(c)

    def forward(self, idx, attention_mask=None, token_type_ids=None, acts=None):
        x = self.bert(idx, attention_mask, token_type_ids, acts)
        pred = self.cls.predictions
        h = pred.transform(x)
        if acts is not None:
            acts["hidden.mlm"] = h
        return F.linear(h, self.bert.embeddings.word_embeddings.weight, pred.bias)   # tied decoder


# ----------------------------------------------------------------------------- shared

def init_params(model, std=0.02):
    """Deterministic init in named_parameters order from the global generator:
    matrices/embeddings N(0, std); biases std*N(0,1); LayerNorm weights 1 + 0.1*N(0,1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
            elif p.ndim == 1:
                p.normal_(0.0, 0.1).add_(1.0)
            else:
                p.normal_(0.0, std)


def param_groups(model, weight_decay):
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def mlm_loss(logits, labels):
    """HF BertForMaskedLM: mean cross entropy over the positions with labels != -100."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=-100)


def hf_config(arch, c):
    if arch == "gpt2":
        return {
            "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": 0.0, "bos_token_id": c["vocab_size"] - 1,
            "embd_pdrop": 0.0, "eos_token_id": c["vocab_size"] - 1,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
            "n_embd": c["n_embd"], "n_head": c["n_head"], "n_inner": None,
            "n_layer": c["n_layer"], "n_positions": c["n_positions"],
            "reorder_and_upcast_attn": False, "resid_pdrop": 0.0,
            "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
            "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True,
            "vocab_size": c["vocab_size"],
        }
    if arch == "bert":
        return {
            "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.0,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "hidden_size": c["hidden_size"], "initializer_range": 0.02,
            "intermediate_size": c["intermediate_size"], "layer_norm_eps": c["layer_norm_eps"],
            "max_position_embeddings": c["max_position_embeddings"], "model_type": "bert",
            "num_attention_heads": c["num_attention_heads"],
            "num_hidden_layers": c["num_hidden_layers"], "pad_token_id": 0,
            "position_embedding_type": "absolute", "tie_word_embeddings": True,
            "torch_dtype": "float32", "type_vocab_size": c["type_vocab_size"],
            "vocab_size": c["vocab_size"],
        }
    return {
        "apply_residual_connection_post_layernorm": False, "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_dropout": 0.0,
        "hidden_size": c["hidden_size"], "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
        "model_type": "bloom", "n_head": c["n_head"], "n_layer": c["n_layer"],
        "pretraining_tp": 1, "slow_but_exact": False, "tie_word_embeddings": True,
        "torch_dtype": "float32", "use_cache": True, "vocab_size": c["vocab_size"],
    }


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def causal_batch(c):
    """gpt2/bloom: input tokens[:, :T], targets tokens[:, 1:]."""
    tokens = torch.randint(0, c["vocab_size"], (B, T + 1), dtype=torch.int64)
    return ({"tokens": tokens},
            lambda model, acts=None: model(tokens[:, :T], acts),
            lambda logits: lm_loss(logits, tokens[:, 1:]))


def bert_batch(c):
    """bert: tokens (B,T), attention_mask (row 1 padded at the end), token_type_ids (row 1
    switches to type 1), labels (-100 but at BERT_LABELED, never on a padded position)."""
    V = c["vocab_size"]
    tokens = torch.randint(0, V, (B, T), dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, T - BERT_PAD:] = 0
    token_type_ids = torch.zeros(B, T, dtype=torch.int64)
    token_type_ids[1, BERT_TYPE1_FROM:] = 1
    labels = torch.full((B, T), -100, dtype=torch.int64)
    vals = torch.randint(0, V, (len(BERT_LABELED),), dtype=torch.int64)
    for (b, t), v in zip(BERT_LABELED, vals.tolist()):
        assert attention_mask[b, t] == 1, "labelled a padded position"
        labels[b, t] = v
    batch = {"tokens": tokens, "attention_mask": attention_mask,
             "token_type_ids": token_type_ids, "labels": labels}
    return (batch,
            lambda model, acts=None: model(tokens, attention_mask, token_type_ids, acts),
            lambda logits: mlm_loss(logits, labels))


ARCHS = {   # arch -> (config, model class, batch builder)
    "gpt2": (GPT2_CONFIG, lambda c: GPT2LMHeadModel(c), causal_batch),
    "bloom": (BLOOM_CONFIG, lambda c: BloomForCausalLM(c), causal_batch),
    "bert": (BERT_CONFIG, lambda c: BertForMaskedLM(c), bert_batch),
}


def generate(arch, out_dir):
    torch.manual_seed(SEED)
    config, make_model, make_batch = ARCHS[arch]
    c = dict(config)
    model = make_model(c)
    init_params(model)
    batch, forward, loss_fn = make_batch(c)
    tokens = batch["tokens"]
    names = [n for n, _ in model.named_parameters()]
    init_state = {n: f32(p) for n, p in model.named_parameters()}

    # f32 pass, only to report how far a float32 implementation lands from the ref
    logits32 = forward(model)
    loss32 = loss_fn(logits32)
    loss32.backward()
    grads32 = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    model.double()
    ref = {k: v.to(torch.int32) for k, v in batch.items()}
    acts = {}
    logits = forward(model, acts)
    loss = loss_fn(logits)
    loss.backward()
    ref["logits"] = f32(logits)
    if arch != "bert":
        # greedy continuation with the initial weights: the whole sequence at every step
        # (no cache)
        with torch.no_grad():
            seq = tokens[0:1, :GREEDY_PROMPT].clone()
            for _ in range(GREEDY_NEW):
                nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
                seq = torch.cat([seq, nxt], dim=1)
        ref["greedy"] = seq[0].to(torch.int32)
    ref["loss"] = f32(loss.reshape(1))
    for k, v in acts.items():
        ref[k] = f32(v)
    if arch == "bloom":
        ref["alibi.slopes"] = alibi_slopes(c["n_head"])
    for n, p in model.named_parameters():
        ref["grad." + n] = f32(p.grad)

    # denominator floored at 1e-6 of the largest gradient: some gradients are exactly zero
    # in exact arithmetic (BERT's attention key bias: softmax ignores a per-query shift)
    gmax = max(p.grad.abs().max().item() for p in model.parameters())
    err = {"logits": (logits32.double() - logits).abs().max().item(),
           "grad": max(((grads32[n].double() - p.grad).abs().max()
                        / p.grad.abs().max().clamp_min(max(1e-30, 1e-6 * gmax))).item()
                       for n, p in model.named_parameters())}

    if arch == "bert":   # the random-LTD encoder path: logits, loss and every gradient
        model.zero_grad(set_to_none=True)
        ltd_logits = bert_ltd_logits(model, tokens, batch["attention_mask"], batch["token_type_ids"])
        ltd_loss = loss_fn(ltd_logits)
        ltd_loss.backward()
        ref["ltd.kept"] = torch.tensor(BERT_LTD_KEPT, dtype=torch.int32)
        ref["ltd.logits"] = f32(ltd_logits)
        ref["ltd.loss"] = f32(ltd_loss.reshape(1))
        for n, p in model.named_parameters():
            ref["ltd.grad." + n] = f32(p.grad)
        model.zero_grad(set_to_none=True)

    # AdamW trace: 10 steps on the same batch, float64
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW(param_groups(model, ADAMW["weight_decay"]), lr=ADAMW["lr"],
                            betas=ADAMW["betas"], eps=ADAMW["eps"])
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        l = loss_fn(forward(model))
        l.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP).item())
        opt.step()
        losses.append(l.item())
    ref["adamw.losses"] = torch.tensor(losses, dtype=torch.float32)
    ref["adamw.grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in model.named_parameters():
        ref["adamw.final." + n] = f32(p)

    if arch == "bert":
        io = {"input": "tokens, attention_mask, token_type_ids (all [batch, seq])",
              "targets": "labels (-100 = ignored; labelled at %s)"
                         % ",".join("(%d,%d)" % bt for bt in BERT_LABELED),
              "loss": "masked-LM cross entropy, mean over positions with labels != -100"}
    else:
        io = {"input": "tokens[:, :seq]", "targets": "tokens[:, 1:]",
              "loss": "mean cross entropy"}
    meta = {
        "arch": arch, "seed": str(SEED), "batch": str(B), "seq": str(T),
        "compute_dtype": "float64", "torch": torch.__version__,
        "input": io["input"], "targets": io["targets"], "loss": io["loss"],
        "optimizer": "torch.optim.AdamW", "lr": repr(ADAMW["lr"]),
        "betas": "%r,%r" % ADAMW["betas"], "eps": repr(ADAMW["eps"]),
        "weight_decay": repr(ADAMW["weight_decay"]),
        "weight_decay_rule": "params with ndim>=2 decay; biases and LayerNorm weights 0.0",
        "clip": repr(CLIP), "clip_rule": "torch.nn.utils.clip_grad_norm_: global L2 norm; "
                                         "grads *= min(1, clip/(norm+1e-6))",
        "steps": str(STEPS), "adamw.losses": "loss before each step",
        "adamw.grad_norms": "global grad norm before clipping, each step",
        "params": ",".join(names),
    }
    if arch == "bert":
        meta["hidden"] = ("hidden.embed: after the embedding LayerNorm; hidden.h.i: output of "
                          "layer i; hidden.mlm: MLM transform output after its LayerNorm")
    d = os.path.join(out_dir, arch)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(arch, c), f, indent=2, sort_keys=True)
        f.write("\n")
    st.save(os.path.join(d, "model.safetensors"), init_state, {"format": "pt"})
    st.save(os.path.join(d, "ref.safetensors"), ref, meta)

    # self-check: read back
    back, _ = st.load(os.path.join(d, "model.safetensors"))
    assert sorted(back) == sorted(names)
    rback, _ = st.load(os.path.join(d, "ref.safetensors"))
    assert (rback["logits"] == ref["logits"].numpy()).all()
    return c, err, losses, norms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", default="all", choices=["gpt2", "bloom", "bert", "all"])
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)   # same reduction order everywhere
    archs = ["gpt2", "bloom", "bert"] if a.arch == "all" else [a.arch]
    for arch in archs:
        t0 = time.time()
        c, err, losses, norms = generate(arch, a.out)
        if not a.quiet:
            print(f"{arch}: {c} -> {os.path.join(a.out, arch)} ({time.time() - t0:.2f}s)")
            print(f"  loss {losses[0]:.6f} -> {losses[-1]:.6f} after {STEPS} AdamW steps; "
                  f"grad norms {norms[0]:.3f} .. {norms[-1]:.3f}")
            print(f"  float32 vs float64: logits max abs {err['logits']:.2e}, "
                  f"grads max rel-to-max {err['grad']:.2e}")


if __name__ == "__main__":
    main()
