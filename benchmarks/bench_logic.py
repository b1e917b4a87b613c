"""Compiled theories vs hand-written eager torch (forward + backward), side by side.

    .venv/bin/python benchmarks/bench_logic.py [--out results.json] [--reps 5] [--threads 1]
        [--no-compile | --compile-all] [--cases refuge,voc] [--semantics log_product,product]
        [--small] [--device cpu|cuda]

(a) REFUGE: "cup implies disc" and "outside the disc box is not disc" on
    logits [8, 512, 512]; (b) VOC box rules (outside every box is background,
    each row / column of a box holds some of its class, a class stays inside
    its boxes) on [4, 21, 256, 256] with 8 boxes (some padded out via
    domains=). Each under the SBR semantics (log_product, loss -log t, the
    paper's) and LTN's (product, pmean_error / pmean).

"hand" computes the same maths in plain eager torch, written the way a
careful person would (log-sigmoid, log1mexp via torch.where, masked sums);
"naive" (REFUGE only) is the short unstable version (sigmoid, product, log of
a clamp). Ratios compare the best of interleaved repetitions measured in one run.
Also: torch.compile'd theory, LTNtorch's operators on the same formulas (if
installed), parse + check time and cached compile time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

# run from a checkout without installing: the repository root first on the path
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fuzzylogic as fl  # noqa: E402
from fuzzylogic import compiler  # noqa: E402

REFUGE = """
sort pixel[2]
sort box
predicate cup(pixel) logits
predicate disc(pixel) logits
predicate inside(pixel, box)
constant disc_box: box
rule cup_in_disc: forall p: cup(p) -> disc(p)
rule outside_disc: forall p where not inside(p, disc_box): not disc(p)
"""

VOC = """
sort class
sort row
sort col
sort box
predicate seg(class, row, col) softmax(class)
predicate inbox(row, col, box)
predicate rowin(row, box)
predicate colin(col, box)
predicate obj(box, row, col)   # the probability of each box's class (gathered by the caller)
predicate cbox(class, row, col)
predicate fg(class)
constant background: class = 0
rule outside_bg: forall r, x where not (exists b: inbox(r, x, b)): seg(background, r, x)
rule rows: forall b: forall r in rowin(r, b): exists x in colin(x, b): obj(b, r, x)
rule cols: forall b: forall x in colin(x, b): exists r in rowin(r, b): obj(b, r, x)
rule exclusion: forall c in fg(c): forall r, x where not cbox(c, r, x): not seg(c, r, x)
"""

LN2 = math.log(2.0)


def log1mexp(x):
    """What a careful hand-writer uses for log(1 - e^x)."""
    x = x.clamp_max(-1e-30)
    return torch.where(x > -LN2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pmean(a, dims, p, w=None):
    if w is None:
        return a.pow(p).mean(dims).clamp_min(1e-30).pow(1.0 / p)
    return ((w * a.pow(p)).sum(dims) / w.sum(dims).clamp_min(1e-30)).clamp_min(1e-30).pow(1.0 / p)


# ------------------------------------------------------------------ REFUGE
def refuge_data(B, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    cup = torch.randn(B, S, S, generator=g) * 3
    disc = torch.randn(B, S, S, generator=g) * 3
    inside = torch.zeros(B, S, S, 2)
    inside[:, S // 4: 3 * S // 4, S // 4: 3 * S // 4, 0] = 1  # disc box
    inside[:, 3 * S // 8: 5 * S // 8, 3 * S // 8: 5 * S // 8, 1] = 1  # cup box
    return {k: v.to(DEVICE) for k, v in dict(cup=cup, disc=disc, inside=inside).items()}


def refuge_hand(cup, disc, inside, sem):
    out = 1.0 - inside[..., 0]
    if sem == "log_product":
        l1 = log1mexp(F.logsigmoid(cup) + F.logsigmoid(-disc)).sum((1, 2))
        l2 = (out * F.logsigmoid(-disc)).sum((1, 2))
        return -l1.mean() - l2.mean()
    a, b = torch.sigmoid(cup), torch.sigmoid(disc)
    t1 = 1.0 - pmean(a * (1.0 - b), (1, 2), 2.0)  # 1 - I = a (1 - b)
    t2 = 1.0 - pmean(b, (1, 2), 2.0, out)  # not disc: 1 - (1 - b) = b
    return (1.0 - t1).mean() + (1.0 - t2).mean()


def refuge_naive(cup, disc, inside, sem):
    a, b = torch.sigmoid(cup), torch.sigmoid(disc)
    out = 1.0 - inside[..., 0]
    if sem == "log_product":
        t1 = torch.log((1.0 - a + a * b).clamp_min(1e-12)).sum((1, 2))
        t2 = (out * torch.log((1.0 - b).clamp_min(1e-12))).sum((1, 2))
        return -t1.mean() - t2.mean()
    t1 = 1.0 - torch.sqrt(((1.0 - (1.0 - a + a * b)) ** 2).mean((1, 2)))
    t2 = 1.0 - torch.sqrt((out * b ** 2).sum((1, 2)) / out.sum((1, 2)))
    return (1.0 - t1).mean() + (1.0 - t2).mean()


def refuge_ltn(cup, disc, inside, sem):
    import ltn.fuzzy_ops as fo
    a, b = torch.sigmoid(cup), torch.sigmoid(disc)
    impl = fo.ImpliesReichenbach(stable=False)(a, b)
    t1 = fo.AggregPMeanError(p=2, stable=False)(impl, dim=(1, 2))
    mask = (inside[..., 0] < 0.5)
    t2 = fo.AggregPMeanError(p=2, stable=False)(fo.NotStandard()(b), dim=(1, 2), mask=mask)
    return (1.0 - t1).mean() + (1.0 - t2).mean()


# ------------------------------------------------------------------ VOC
def voc_data(B, C, S, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(B, C, S, S, generator=g) * 2
    boxes = torch.zeros(B, N, 4, dtype=torch.long)
    labels = torch.randint(1, C, (B, N), generator=g)
    for b in range(B):
        for n in range(N):
            x0, y0 = torch.randint(0, S // 2, (2,), generator=g).tolist()
            w, h = torch.randint(S // 8, S // 2, (2,), generator=g).tolist()
            boxes[b, n] = torch.tensor([x0, y0, x0 + w, y0 + h])
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[:, N - 2:] = False  # the last two boxes are padding
    ys = torch.arange(S)
    rowin = ((ys[None, :, None] >= boxes[:, None, :, 1]) & (ys[None, :, None] < boxes[:, None, :, 3])).float()
    colin = ((ys[None, :, None] >= boxes[:, None, :, 0]) & (ys[None, :, None] < boxes[:, None, :, 2])).float()
    rowin, colin = rowin * valid[:, None], colin * valid[:, None]
    inbox = rowin[:, :, None, :] * colin[:, None, :, :]  # [B, H, W, N]
    cbox = torch.zeros(B, C, S, S)
    for b in range(B):
        for n in range(N):
            if valid[b, n]:
                c = labels[b, n]
                cbox[b, c] = torch.maximum(cbox[b, c], inbox[b, :, :, n])
    fg = torch.ones(B, C)
    fg[:, 0] = 0
    d = dict(seg=seg, labels=labels, valid=valid, rowin=rowin, colin=colin, inbox=inbox,
             cbox=cbox, fg=fg)
    return {k: v.to(DEVICE) for k, v in d.items()}


def voc_obj(seg, labels):
    """The probability of each box's class at each pixel: [B, N, H, W] (caller code)."""
    probs = torch.softmax(seg, 1)
    B, N = labels.shape
    return probs.gather(1, labels[:, :, None, None].expand(B, N, *probs.shape[2:]))


def voc_theory_loss(theory, d, compiled=None):
    obj = voc_obj(d["seg"], d["labels"])
    kw = dict(seg=d["seg"], inbox=d["inbox"], rowin=d["rowin"], colin=d["colin"], obj=obj,
              cbox=d["cbox"], fg=d["fg"])
    fn = compiled or (lambda **k: theory.loss(validate=False, **k))
    return fn(domains={"box": d["valid"]}, **kw)


def voc_hand(d, sem):
    seg, valid = d["seg"], d["valid"].float()
    obj = voc_obj(seg, d["labels"])  # [B, N, H, W]
    rowin, colin = d["rowin"].transpose(1, 2), d["colin"].transpose(1, 2)  # [B, N, H], [B, N, W]
    vb = valid[:, :, None]
    if sem == "log_product":
        ls = F.log_softmax(seg, 1)
        l1p_in = torch.log1p(-d["inbox"]).clamp_min(-87.0)  # exact for the 0/1 box masks
        outside = torch.exp((valid[:, None, None, :] * l1p_in).sum(-1))  # not (exists b)
        r1 = (outside * ls[:, 0]).sum((1, 2))
        l1p_obj = torch.log1p(-obj.clamp_max(1 - 6e-8))
        ex_row = log1mexp((colin[:, :, None, :] * l1p_obj).sum(-1))  # [B, N, H]
        r2 = (vb * rowin * ex_row).sum((1, 2))
        ex_col = log1mexp((rowin[:, :, :, None] * l1p_obj).sum(-2))  # [B, N, W]
        r3 = (vb * colin * ex_col).sum((1, 2))
        w = d["fg"][:, :, None, None] * (1.0 - d["cbox"])
        r4 = (w * log1mexp(ls)).sum((1, 2, 3))
        return -(r1.mean() + r2.mean() + r3.mean() + r4.mean())
    # product (LTN): forall pmean_error 2, exists pmean 2, masked
    probs = torch.softmax(seg, 1)
    inb = d["inbox"] * valid[:, None, None, :]
    ex_in = pmean(inb, (3,), 2.0, valid[:, None, None, :].expand_as(inb))
    outside = 1.0 - ex_in
    t1 = 1.0 - pmean(1.0 - probs[:, 0], (1, 2), 2.0, outside)
    ex_row = pmean(obj, (3,), 2.0, colin[:, :, None, :].expand_as(obj))  # [B, N, H]
    fr = 1.0 - pmean(1.0 - ex_row, (2,), 2.0, rowin)  # [B, N]
    t2 = 1.0 - pmean(1.0 - fr, (1,), 2.0, valid)
    ex_col = pmean(obj, (2,), 2.0, rowin[:, :, :, None].expand_as(obj))
    fc = 1.0 - pmean(1.0 - ex_col, (2,), 2.0, colin)
    t3 = 1.0 - pmean(1.0 - fc, (1,), 2.0, valid)
    inner = 1.0 - pmean(probs, (2, 3), 2.0, (1.0 - d["cbox"]))  # forall r,x: not seg  [B, C]
    t4 = 1.0 - pmean(1.0 - inner, (1,), 2.0, d["fg"])
    return sum((1.0 - t).mean() for t in (t1, t2, t3, t4))


# ------------------------------------------------------------------ timing
DEVICE = torch.device("cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def fwd_bwd(fn, leaves):
    for t in leaves:
        t.grad = None
    _sync()
    t0 = time.perf_counter()
    loss = fn()
    loss.backward()
    _sync()  # CUDA launches are asynchronous: time the work, not the launch
    return time.perf_counter() - t0, float(loss.detach())


def race(cases, leaves, reps):
    """Interleaved repetitions; name -> (best seconds, loss).

    The best of several runs estimates the cost on a machine shared with
    other jobs better than the median (noise only ever adds time)."""
    times = {k: [] for k in cases}
    losses = {}
    for k, fn in cases.items():  # warm-up (and first-call costs)
        _, losses[k] = fwd_bwd(fn, leaves)
    for _ in range(reps):
        for k, fn in cases.items():
            dt, _ = fwd_bwd(fn, leaves)
            times[k].append(dt)
    return {k: (min(v), losses[k]) for k, v in times.items()}


def try_compile(fn):
    try:
        return torch.compile(fn, dynamic=False)
    except Exception as e:  # pragma: no cover - depends on the toolchain
        print(f"  torch.compile unavailable: {e}")
        return None


def bench_refuge(sem, B, S, reps, use_compile, have_ltn):
    d = refuge_data(B, S)
    cup = d["cup"].requires_grad_()
    disc = d["disc"].requires_grad_()
    th = fl.compile(REFUGE, sem)
    kw = dict(cup=cup, disc=disc, inside=d["inside"], disc_box=0)
    cases = {
        "compiled": lambda: th.loss(validate=False, **kw),
        "compiled+validate": lambda: th.loss(**kw),
        "hand": lambda: refuge_hand(cup, disc, d["inside"], sem),
        "naive": lambda: refuge_naive(cup, disc, d["inside"], sem),
    }
    if have_ltn and sem == "product":
        cases["ltntorch"] = lambda: refuge_ltn(cup, disc, d["inside"], sem)
    if use_compile:
        cfn = try_compile(lambda cup, disc, inside: th.loss(validate=False, cup=cup, disc=disc,
                                                           inside=inside, disc_box=0))
        if cfn is not None:
            t0 = time.perf_counter()
            fwd_bwd(lambda: cfn(cup, disc, d["inside"]), [cup, disc])
            print(f"  refuge/{sem}: torch.compile warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            cases["torch.compile"] = lambda: cfn(cup, disc, d["inside"])
    return race(cases, [cup, disc], reps)


def bench_voc(sem, B, S, reps, use_compile):
    dv = voc_data(B, 21, S, 8)
    seg = dv["seg"].requires_grad_()
    thv = fl.compile(VOC, sem)
    cases = {
        "compiled": lambda: voc_theory_loss(thv, dv),
        "compiled+validate": lambda: thv.loss(
            domains={"box": dv["valid"]}, seg=seg, inbox=dv["inbox"], rowin=dv["rowin"],
            colin=dv["colin"], obj=voc_obj(seg, dv["labels"]), cbox=dv["cbox"], fg=dv["fg"]),
        "hand": lambda: voc_hand(dv, sem),
    }
    if use_compile:
        cfn = try_compile(lambda **k: thv.loss(validate=False, **k))
        if cfn is not None:
            t0 = time.perf_counter()
            fwd_bwd(lambda: voc_theory_loss(thv, dv, cfn), [seg])
            print(f"  voc/{sem}: torch.compile warm-up {time.perf_counter() - t0:.1f} s", flush=True)
            cases["torch.compile"] = lambda: voc_theory_loss(thv, dv, cfn)
    return race(cases, [seg], reps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions; the best is kept (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-all", action="store_true",
                    help="torch.compile under every semantics (default: log_product only; "
                         "each compile takes 20-30 s of CPU)")
    ap.add_argument("--cases", default="refuge,voc", help="comma-separated: refuge, voc")
    ap.add_argument("--semantics", default="log_product,product", help="comma-separated presets")
    ap.add_argument("--small", action="store_true", help="quarter-size inputs (smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    results = {"torch": torch.__version__, "device": str(DEVICE), "threads": args.threads, "reps": args.reps,
               "small": args.small, "cases": {}}
    try:
        import ltn  # noqa: F401
        have_ltn = True
    except ImportError:
        have_ltn = False

    # parse + check and compile times
    for name, text in (("refuge", REFUGE), ("voc", VOC)):
        t0 = time.perf_counter()
        for _ in range(20):
            fl.check(fl.parse(text, f"<{name}>"))
        pc = (time.perf_counter() - t0) / 20 * 1e3
        compiler.cache_clear()
        t0 = time.perf_counter()
        fl.compile(text, "log_product", source=f"<{name}>")
        cold = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for _ in range(1000):
            fl.compile(text, "log_product", source=f"<{name}>")
        warm = (time.perf_counter() - t0) / 1000 * 1e6
        results[f"{name}_parse_check_ms"] = pc
        results[f"{name}_compile_uncached_ms"] = cold
        results[f"{name}_compile_cached_us"] = warm
        print(f"{name}: parse+check {pc:.2f} ms, compile (cache cleared) {cold:.2f} ms, "
              f"compile (cached) {warm:.2f} us", flush=True)

    S, B = (256, 2) if args.small else (512, 8)
    Sv, Bv = (128, 2) if args.small else (256, 4)
    rows = []
    for sem in args.semantics.split(","):
        use_compile = not args.no_compile and (args.compile_all or sem == "log_product")
        if "refuge" in args.cases:
            rows.append(("refuge", sem, f"[{B}, {S}, {S}]",
                         bench_refuge(sem, B, S, args.reps, use_compile, have_ltn)))
        if "voc" in args.cases:
            rows.append(("voc", sem, f"[{Bv}, 21, {Sv}, {Sv}] x 8 boxes",
                         bench_voc(sem, Bv, Sv, args.reps, use_compile)))

    print()
    print(f"{'case':8} {'semantics':12} {'variant':18} {'ms':>9} {'vs hand':>8} {'loss':>14}")
    for task, sem, shape, res in rows:
        hand = res["hand"][0]
        key = f"{task}/{sem}"
        results["cases"][key] = {"shape": shape}
        for k, (t, loss) in res.items():
            print(f"{task:8} {sem:12} {k:18} {t * 1e3:9.1f} {t / hand:8.3f} {loss:14.6g}")
            results["cases"][key][k] = {"ms": t * 1e3, "ratio_vs_hand": t / hand, "loss": loss}
    results["wall_s"] = time.perf_counter() - t_start
    print(f"total {results['wall_s']:.0f} s")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
