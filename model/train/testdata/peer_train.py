"""PyTorch's figure for the training benchmarks (model/train/bench_test.go).

The peer of BenchmarkTrain*: a Llama decoder of the given shape (RMSNorm,
rotate-half RoPE, grouped-query attention with a causal mask, SwiGLU, tied
or untied LM head) with random weights, trained by PyTorch (Debian's
python3-torch) in float32 on the CPU: autograd, a cross-entropy over every
next token and torch.optim.AdamW. Full fine-tuning, or with --lora-r LoRA
adapters (r, alpha 2r, on the --lora-targets projections) over a frozen
base.

Every product (projections, LM head, attention scores and values, forward
and backward) runs on oneDNN's linear where the build has it: Debian's
torch links the reference BLAS (~4 GFLOP/s on 2 threads, 25 tokens/s on
15m), its oneDNN linear reaches twenty-five times that. --blas: torch's own
matmul.

One optimizer step on rows x seq tokens to warm up, then --steps timed.
Prints one JSON object: tokens_per_s, threads, torch version, mode,
which linear ran, trainable parameters.
"""
import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F


USE_MKLDNN = torch.backends.mkldnn.is_available()


def _mm(a, b):
    """a @ b.T for 2-D a [m, k] and b [n, k]."""
    if not USE_MKLDNN:
        return a @ b.t()
    return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous().to_mkldnn(), None).to_dense()


class MM(torch.autograd.Function):
    """a @ b.T with its backward on _mm."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _mm(a, b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        da = _mm(dy, b.t()) if ctx.needs_input_grad[0] else None
        db = _mm(dy.t(), a.t()) if ctx.needs_input_grad[1] else None
        return da, db


def linear(x, w):
    return MM.apply(x.reshape(-1, x.shape[-1]), w).reshape(*x.shape[:-1], w.shape[0])


class Linear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.in_features, self.out_features = i, o
        self.weight = nn.Parameter(torch.empty(o, i))

    def forward(self, x):
        return linear(x, self.weight)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class LoRALinear(nn.Module):
    """A frozen linear layer plus scale * B(A(x))."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        self.a = Linear(base.in_features, r)
        self.b = Linear(r, base.out_features)
        nn.init.normal_(self.a.weight, std=0.02)
        nn.init.zeros_(self.b.weight)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.b(self.a(x)) * self.scale


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        e, hd = a.hidden, a.head_dim
        self.q = Linear(e, a.heads * hd)
        self.k = Linear(e, a.kv_heads * hd)
        self.v = Linear(e, a.kv_heads * hd)
        self.o = Linear(a.heads * hd, e)
        self.gate = Linear(e, a.inter)
        self.up = Linear(e, a.inter)
        self.down = Linear(a.inter, e)
        self.n1 = nn.Parameter(torch.ones(e))
        self.n2 = nn.Parameter(torch.ones(e))
        self.a = a

    def forward(self, x, cos, sin, mask):
        a = self.a
        b, s, _ = x.shape
        h = rms_norm(x, self.n1, a.eps)
        q = self.q(h).view(b, s, a.heads, a.head_dim).transpose(1, 2)
        k = self.k(h).view(b, s, a.kv_heads, a.head_dim).transpose(1, 2)
        v = self.v(h).view(b, s, a.kv_heads, a.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = a.heads // a.kv_heads
        out = []
        for r in range(b):
            for hh in range(a.heads):
                kh = hh // rep
                sc = MM.apply(q[r, hh], k[r, kh]) / math.sqrt(a.head_dim) + mask
                out.append(MM.apply(torch.softmax(sc, -1), v[r, kh].t()))
        att = torch.stack(out).view(b, a.heads, s, a.head_dim)
        x = x + self.o(att.transpose(1, 2).reshape(b, s, -1))
        h = rms_norm(x, self.n2, a.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = nn.Parameter(torch.ones(a.hidden))
        self.head = Linear(a.hidden, a.vocab)
        if a.tied:
            self.head.weight = self.embed.weight
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        half = a.head_dim // 2
        inv = 1.0 / (a.rope_theta ** (torch.arange(half, dtype=torch.float32) / half))
        ang = torch.outer(torch.arange(a.seq, dtype=torch.float32), inv)
        self.cos = torch.cat((ang.cos(), ang.cos()), -1)
        self.sin = torch.cat((ang.sin(), ang.sin()), -1)
        self.mask = torch.full((a.seq, a.seq), float("-inf")).triu(1)

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.head(rms_norm(x, self.norm, self.a.eps))


def main():
    p = argparse.ArgumentParser()
    for name, default in [("vocab", 32000), ("hidden", 288), ("inter", 768), ("layers", 6), ("heads", 6),
                          ("kv-heads", 6), ("head-dim", 48), ("rows", 4), ("seq", 256), ("steps", 3),
                          ("threads", 2), ("lora-r", 0), ("tied", 1)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--lora-targets", default="q,k,v,o")
    p.add_argument("--blas", action="store_true")
    a = p.parse_args()
    global USE_MKLDNN
    USE_MKLDNN = USE_MKLDNN and not a.blas
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = Decoder(a)
    mode = "full"
    if a.lora_r > 0:
        mode = "lora"
        for p_ in model.parameters():
            p_.requires_grad_(False)
        for layer in model.layers:
            for t in a.lora_targets.split(","):
                setattr(layer, t, LoRALinear(getattr(layer, t), a.lora_r, 2 * a.lora_r))
    params = [p_ for p_ in model.parameters() if p_.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, min(256, a.vocab), (a.rows, a.seq), generator=g)

    def step():
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    el = time.perf_counter() - t0
    print(json.dumps({
        "tokens_per_s": a.rows * a.seq * a.steps / el,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mode": mode,
        "linear": "oneDNN" if USE_MKLDNN else "BLAS",
        "trainable": sum(p_.numel() for p_ in params),
    }))


if __name__ == "__main__":
    main()
