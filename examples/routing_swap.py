"""Routing swap on tiny-moe: a code prompt run with a prose prompt's routing (and the other way
round), in all layers, the first three or the last three; how far the next-token distribution
moves (KL to the prompt's own run, nats) and how often its top-1 token survives.

    python examples/routing_swap.py
"""
import numpy as np, routelab
s = routelab.load("tiny-moe", progress=False)
prose = "Once upon a time there was a little girl who lived in a village near the forest. Every day she"
code = "fn main() {\n    let values = vec![1, 2, 3];\n    for v in values.iter() {\n        println!(\"{}\", v);"
P = s.forward(prose, capture="router")
C = s.forward(code, capture="router")
n = min(len(P), len(C))
def logp(x):
    x = x.astype(np.float64); m = x.max(-1, keepdims=True); return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
def kl(a, b):
    la, lb = logp(a), logp(b); return (np.exp(la) * (la - lb)).sum(-1)
for name, base, other in [("code", C, P), ("prose", P, C)]:
    toks = base.tokens[:n]
    plain = s.forward(toks.tolist(), capture="router")
    for layers in [None, [0, 1, 2], [3, 4, 5]]:
        sw = s.forward(toks.tolist(), capture="router", replay=other, replay_layers=layers, replay_positions=(0, n))
        k = kl(plain.logits, sw.logits)
        top1 = (plain.logits.argmax(-1) == sw.logits.argmax(-1)).mean()
        print(f"{name} tokens with the other prompt's routing in layers {layers or 'all'}: mean KL {k.mean():.3f} nats (median {np.median(k):.3f}), top-1 kept at {100*top1:.0f}% of {n} positions")
    # reference: how far the same positions' routing and context of the other prompt are
    sel_same = np.mean([np.mean([set(plain.router_experts(l)[p]) == set(other.router_experts(l)[p]) for p in range(n)]) for l in range(6)])
    print(f"  (the two prompts share the same top-2 set at {100*sel_same:.0f}% of layer-positions)")
