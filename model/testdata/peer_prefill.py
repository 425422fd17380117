"""PyTorch's figure for the native engine's prefill and scoring benchmarks.

The peer of model/bench_test.go's BenchmarkPrefillLong and BenchmarkScore:
a Llama decoder of the given shape (RMSNorm, rotate-half RoPE, grouped-query
attention with a causal mask, SwiGLU, tied LM head) with random weights,
run by PyTorch (Debian's python3-torch) in float32 on the CPU.

  prefill: batch rows of seq tokens through every layer (keys and values
           kept, as a KV cache would hold them), the LM head on each row's
           last token only;
  score:   rows of seq tokens in batches, the LM head on every token and
           the log-probability of each next token.

Products by oneDNN's linear where the build has it (--blas: torch.matmul).
Prints one JSON object: tokens_per_s, rows_per_s, threads, torch version,
which linear ran.
"""
import argparse
import json
import math
import time

import torch

try:
    import torch.utils.mkldnn as mkldnn_utils
except ImportError:  # a build without oneDNN
    mkldnn_utils = None


def linear_fn(w, use_mkldnn):
    """x @ w.T, by oneDNN where the build has it: Debian's torch links the
    reference BLAS (~5 GFLOP/s), its oneDNN linear reaches ten times that."""
    if not use_mkldnn:
        wt = w.t().contiguous()
        return lambda x: x @ wt
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    m = mkldnn_utils.MkldnnLinear(lin, torch.float)
    return lambda x: m(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], w.shape[0])


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


class Decoder:
    def __init__(self, a):
        g = torch.Generator().manual_seed(1)
        def w(*shape):
            return torch.randn(*shape, generator=g) * 0.02
        e, inter = a.hidden, a.inter
        self.a = a
        self.mkldnn = mkldnn_utils is not None and torch.backends.mkldnn.is_available() and not a.blas
        lin = lambda t: linear_fn(t, self.mkldnn)
        self.embed = w(a.vocab, e)
        self.layers = []
        for _ in range(a.layers):
            self.layers.append(dict(
                qkv=lin(w((a.heads + 2 * a.kv_heads) * a.head_dim, e)),
                o=lin(w(e, a.heads * a.head_dim)),
                gate_up=lin(w(2 * inter, e)),
                down=lin(w(e, inter)),
                n1=torch.ones(e), n2=torch.ones(e)))
        self.norm = torch.ones(e)
        self.head = lin(self.embed)
        inv = 1.0 / (a.theta ** (torch.arange(0, a.head_dim, 2).float() / a.head_dim))
        f = torch.outer(torch.arange(a.seq).float(), inv)
        f = torch.cat((f, f), dim=-1)
        self.cos, self.sin = f.cos(), f.sin()

    def hidden(self, tokens):
        a = self.a
        b, s = tokens.shape
        hd, nh, nkv = a.head_dim, a.heads, a.kv_heads
        x = self.embed[tokens]
        mask = torch.full((s, s), float("-inf")).triu(1)
        cos, sin = self.cos[:s], self.sin[:s]
        cache = []
        for l in self.layers:
            h = rms_norm(x, l["n1"], a.eps)
            qkv = l["qkv"](h)
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], dim=-1)
            q = rope(q.view(b, s, nh, hd).transpose(1, 2), cos, sin)
            k = rope(k.view(b, s, nkv, hd).transpose(1, 2), cos, sin)
            v = v.view(b, s, nkv, hd).transpose(1, 2)
            cache.append((k, v))
            if nkv != nh:
                k = k.repeat_interleave(nh // nkv, dim=1)
                v = v.repeat_interleave(nh // nkv, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
            att = torch.softmax(att, dim=-1) @ v
            x = x + l["o"](att.transpose(1, 2).reshape(b, s, nh * hd))
            h = rms_norm(x, l["n2"], a.eps)
            g, u = l["gate_up"](h).chunk(2, dim=-1)
            x = x + l["down"](torch.nn.functional.silu(g) * u)
        return rms_norm(x, self.norm, a.eps), cache

    def prefill(self, tokens):
        h, cache = self.hidden(tokens)
        return self.head(h[:, -1]), cache

    def score(self, tokens):
        h, _ = self.hidden(tokens[:, :-1])
        lp = torch.log_softmax(self.head(h), dim=-1)
        return lp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["prefill", "score"])
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=288)
    p.add_argument("--inter", type=int, default=768)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=48)
    p.add_argument("--theta", type=float, default=10000.0)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--blas", action="store_true", help="products by torch.matmul (the linked BLAS), not oneDNN")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    m = Decoder(a)
    g = torch.Generator().manual_seed(2)
    with torch.inference_mode():
        if a.mode == "prefill":
            tokens = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
            m.prefill(tokens)  # warm up
            t0 = time.perf_counter()
            for _ in range(a.reps):
                m.prefill(tokens)
            dt = time.perf_counter() - t0
            rows = a.batch * a.reps
        else:
            tokens = torch.randint(0, a.vocab, (a.rows, a.seq), generator=g)
            m.score(tokens[: a.batch])  # warm up
            t0 = time.perf_counter()
            for lo in range(0, a.rows, a.batch):
                m.score(tokens[lo:lo + a.batch])
            dt = time.perf_counter() - t0
            rows = a.rows
    print(json.dumps(dict(mode=a.mode, rows_per_s=rows / dt, tokens_per_s=rows * a.seq / dt,
                          threads=torch.get_num_threads(), torch=torch.__version__,
                          linear="onednn" if m.mkldnn else "blas")))


if __name__ == "__main__":
    main()
