#!/usr/bin/env python3
"""PyTorch baseline for the C++ ``fm_bench``: same model, same work, same metrics.

Model: the blog's class-conditional wrapper around diffusers ``UNet2DModel`` with
the seed config (block_out_channels (32, 64, 64), 28x28, 1 image channel +
1 class-embedding channel, 10 classes) -- 1,707,307 parameters.

Modes (``--modes`` takes a comma list, run in the order given, in one process):

  eager         eager PyTorch, strict fp32 (TF32 only with ``--tf32``)
  eager-tf32    eager PyTorch with TF32 matmul/conv allowed
  compile       torch.compile(model), strict fp32 (TF32 only with ``--tf32``)
  compile-tf32  torch.compile(model) with TF32
  compile-ro    torch.compile(model, mode="reduce-overhead") (CUDA graphs), TF32, AdamW(fused=True)
  eager-bf16    eager PyTorch, the forward under torch.autocast(dtype=torch.bfloat16) (mixed
                precision: float32 weights, AdamW and loss; convs and matmuls in bf16): the counterpart
                of fm_bench --precision bf16
  ``--mode eager|compile|both`` is the older spelling of ``--modes eager|compile|eager,compile``.

Measured per mode:

  train      one flow-matching training step at ``--batch`` (default 128):
             x ~ U[-1, 1] (stand-in for MNIST scaled to [-1, 1]), noise ~ N(0, 1),
             sigma ~ U[0.006, 0.994], x_t = (1 - sigma) x + sigma noise,
             timesteps = sigma * 1000 (1-D float tensor), labels ~ U{0..9},
             10% class drop; loss = MSE(pred, noise - x); backward;
             AdamW(lr=1e-3) step.  -> train_ms_per_step (median over --iters
             after --warmup), train_img_per_s
  peak mem   torch.cuda.max_memory_allocated during training on CUDA; on CPU the
             process's peak resident set (resource.getrusage ru_maxrss), which
             includes the Python/torch runtime itself (process-wide: a mode run after
             another reports at least the earlier one's peak)  -> peak_mem_bytes
  sample80   8 images per class x 10 classes = 80 images, 15 Euler steps of
             t = 0.994 -> 0 (linspace, 16 points), classifier-free guidance with
             scale 3: cond + uncond in one batch of 160,
             v = v_u + 3 (v_c - v_u), x <- x + (t_next - t) v  -> sample80_img_per_s
  sample_large  the same with ``--sample-batch`` images (default 1024, i.e.
             forward batches of 2048)  -> sample_large_img_per_s

Output: a table on stdout, and with ``--json FILE`` a JSON object
``{"meta": {...}, "<mode>": {metrics}, ...}``, metrics keys train_ms_per_step,
train_img_per_s, peak_mem_bytes, sample80_img_per_s (None for modes not in
``--sample-modes``), sample_large_img_per_s (None for modes not in ``--large-modes``), tf32, fused_adamw, compile_mode, autocast_bf16. The file is
rewritten after every mode, so a run killed by a timeout keeps the finished modes.
A mode that fails records {"error": "compile failed: ..."}.

Where diffusers is not installed (e.g. the device machine, no network):
  1. here, with network:  pip download diffusers --no-deps -d .whl
     (add its dependencies too if the target lacks them: pip download diffusers -d .whl)
  2. carry .whl/ (git-ignored) to the target and either install it:
         pip install --no-index --no-deps .whl/diffusers*.whl
     (or ``pip install --no-index --find-links .whl diffusers`` for the full set),
     or do nothing: this script puts ``.whl/diffusers*.whl`` (or a diffusers*.whl next
     to itself, as in the GPU-check bundle) on sys.path itself (diffusers is pure
     Python, so the wheel imports as a zip) when the import fails.

Examples:
  python bench/torch_baseline.py --device cpu --threads 2 --quick
  python bench/torch_baseline.py --device cuda --mode both --json out/torch_baseline.json
  python bench/torch_baseline.py --device cuda --modes eager,eager-tf32,compile-tf32,compile-ro \
      --large-modes eager --json out/torch_baseline.json
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent

# The seed config: configs/seed.json is its one source ("_" keys are comments; num_classes and
# class_emb_size belong to the wrapper, the rest to UNet2DModel).
_SEED = {k: v for k, v in json.loads((ROOT / "configs" / "seed.json").read_text()).items()
         if not k.startswith("_")}
NUM_CLASSES = _SEED.pop("num_classes")
CLASS_EMB_SIZE = _SEED.pop("class_emb_size")
SEED_UNET = _SEED
TIME_SCALE = 1000.0


def import_diffusers():
    """Import diffusers, falling back to a carried wheel in .whl/ (see module docstring)."""
    try:
        import diffusers  # noqa: F401
        return diffusers
    except ImportError as first:
        wheels = sorted(glob.glob(str(ROOT / ".whl" / "diffusers*.whl"))) + \
            sorted(glob.glob(os.path.join(os.getcwd(), ".whl", "diffusers*.whl"))) + \
            sorted(glob.glob(str(Path(__file__).resolve().parent / "diffusers*.whl")))
        for w in wheels:
            sys.path.insert(0, w)
            try:
                import diffusers  # noqa: F401
                print(f"[torch_baseline] using diffusers from wheel {w}")
                return diffusers
            except ImportError as e:
                first = e
                sys.path.remove(w)
        sys.exit("torch_baseline.py: diffusers is not importable "
                 f"({type(first).__name__}: {first}).\n"
                 "Install it (pip install diffusers), or carry a wheel: on a networked machine run\n"
                 "  pip download diffusers --no-deps -d .whl      (add deps if the target lacks them)\n"
                 "then on the target: pip install --no-index --no-deps .whl/diffusers*.whl")


class ConditionalUnet(nn.Module):
    """The blog's wrapper (identical to tests/reference/make_fixtures.py)."""

    def __init__(self, unet_cls, unet_config, num_classes=10, class_emb_size=1):
        super().__init__()
        self.class_emb = nn.Embedding(num_classes, class_emb_size)
        self.model = unet_cls(**unet_config)

    def forward(self, x, t, labels, drop):
        emb = self.class_emb(labels) * (~drop).to(x.dtype)[:, None]
        emb = emb[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.model(torch.cat([x, emb], 1), t).sample


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, warmup, iters):
    for _ in range(warmup):
        fn()
    sync(dev)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# mode -> (compile mode or None, TF32 forced on, fused AdamW, bf16 autocast); "tf32 forced off" modes
# follow --tf32.
MODES = {
    "eager": (None, False, False, False),
    "eager-tf32": (None, True, False, False),
    "compile": ("default", False, False, False),
    "compile-tf32": ("default", True, False, False),
    "compile-ro": ("reduce-overhead", True, True, False),
    "eager-bf16": (None, False, False, True),
}


def mark_step():
    """Tells CUDA-graph trees (mode="reduce-overhead") that a new iteration starts; no-op otherwise."""
    fn = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if fn is not None:
        fn()


def make_train_step(model, fwd, opt, batch, dev):
    def step():
        mark_step()
        x = torch.rand(batch, 1, 28, 28, device=dev) * 2 - 1
        noise = torch.randn_like(x)
        sigma = 0.006 + 0.988 * torch.rand(batch, device=dev)
        labels = torch.randint(0, NUM_CLASSES, (batch,), device=dev)
        drop = torch.rand(batch, device=dev) < 0.1
        s = sigma[:, None, None, None]
        xt = (1 - s) * x + s * noise
        pred = fwd(xt, sigma * TIME_SCALE, labels, drop)
        loss = F.mse_loss(pred, noise - x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


@torch.no_grad()
def sample(fwd, n_images, dev, steps=15, cfg_scale=3.0, t0=0.994):
    labels = torch.arange(NUM_CLASSES, device=dev).repeat_interleave(-(-n_images // NUM_CLASSES))[:n_images]
    x = torch.randn(n_images, 1, 28, 28, device=dev)
    lab2 = torch.cat([labels, labels])
    drop2 = torch.cat([torch.zeros(n_images, dtype=torch.bool, device=dev),
                       torch.ones(n_images, dtype=torch.bool, device=dev)])
    ts = torch.linspace(t0, 0.0, steps + 1).tolist()
    for t, tn in zip(ts[:-1], ts[1:]):
        mark_step()
        tt = torch.full((2 * n_images,), t * TIME_SCALE, device=dev)
        v = fwd(torch.cat([x, x]), tt, lab2, drop2)
        vc, vu = v[:n_images], v[n_images:]
        x = x + (tn - t) * (vu + cfg_scale * (vc - vu))
    return x


def run_mode(mode, args, dev, unet_cls):
    compile_mode, force_tf32, fused, bf16 = MODES[mode]
    tf32 = force_tf32 or args.tf32
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    torch.manual_seed(0)
    model = ConditionalUnet(unet_cls, SEED_UNET, NUM_CLASSES, CLASS_EMB_SIZE).to(dev)
    if args.attn == "classic":
        from diffusers.models.attention_processor import Attention, AttnProcessor
        for m in model.modules():
            if isinstance(m, Attention):
                m.set_processor(AttnProcessor())
    fwd = model
    res = {"tf32": tf32 and dev.type == "cuda", "fused_adamw": fused, "compile_mode": compile_mode,
           "autocast_bf16": bf16}
    t_compile = time.perf_counter()
    if compile_mode:
        fwd = torch.compile(model, mode=compile_mode)
    if bf16:  # autocast around the forward (compiled or not); its output back to float32 for the loss
        inner = fwd  # and the Euler update

        def fwd(*a):
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                return inner(*a).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    step = make_train_step(model, fwd, opt, args.batch, dev)
    model.train()
    if compile_mode:  # first call compiles; time it separately
        step()
        sync(dev)
        res["compile_s"] = time.perf_counter() - t_compile
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sec = timed(step, dev, args.warmup, args.iters)
    res["train_ms_per_step"] = sec * 1e3
    res["train_img_per_s"] = args.batch / sec
    if dev.type == "cuda":
        res["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(dev))
    else:
        res["peak_mem_bytes"] = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    del opt
    model.eval()
    sw = max(args.warmup, 1 if compile_mode else 0)
    res["sample80_img_per_s"] = None
    if mode in args.sample_modes:
        sec = timed(lambda: sample(fwd, 80, dev), dev, sw, args.sample_iters)
        res["sample80_img_per_s"] = 80 / sec
    if args.sample_batch > 0 and mode in args.large_modes:
        sec = timed(lambda: sample(fwd, args.sample_batch, dev), dev, sw, args.sample_iters)
        res["sample_large_img_per_s"] = args.sample_batch / sec
    else:
        res["sample_large_img_per_s"] = None
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mode", choices=["eager", "compile", "both"], default=None,
                    help="older spelling: eager, compile or both (= --modes eager,compile)")
    ap.add_argument("--modes", default=None,
                    help=f"comma list of {', '.join(MODES)} (default eager), run in this order")
    ap.add_argument("--sample-modes", default=None,
                    help="comma list of the modes that time sample80 (default: all; '' = none)")
    ap.add_argument("--large-modes", default=None,
                    help="comma list of the modes that also time the large sampling run (default: all)")
    ap.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    ap.add_argument("--iters", type=int, default=20, help="timed training steps (median)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sample-iters", type=int, default=3, help="timed sampling runs (median)")
    ap.add_argument("--sample-batch", type=int, default=None,
                    help="images for the large sampling run (default 1024; --quick: 128; 0 = skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    ap.add_argument("--attn", choices=["sdpa", "classic"], default="sdpa",
                    help="attention processor: diffusers' default on torch>=2 (SDPA) or classic AttnProcessor")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmul/conv on CUDA (default: strict fp32)")
    ap.add_argument("--quick", action="store_true", help="smoke run: warmup 1, iters 2, sample-iters 1, sample-batch 128")
    ap.add_argument("--json", help="write results as JSON here")
    a = ap.parse_args(argv)
    if a.mode and a.modes:
        ap.error("give --mode or --modes, not both")
    modes = (a.modes or {"both": "eager,compile"}.get(a.mode, a.mode) or "eager").split(",")
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode '{m}' (choose from {', '.join(MODES)})")
    if len(set(modes)) != len(modes):
        ap.error("--modes lists a mode twice")
    for opt in ("sample_modes", "large_modes"):
        val = modes if getattr(a, opt) is None else [m for m in getattr(a, opt).split(",") if m]
        for m in val:
            if m not in MODES:
                ap.error(f"unknown mode '{m}' in --{opt.replace('_', '-')}")
        setattr(a, opt, val)

    if a.quick:
        a.warmup, a.iters, a.sample_iters = 1, 2, 1
        if a.sample_batch is None:
            a.sample_batch = 128
    if a.sample_batch is None:
        a.sample_batch = 1024
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda but torch.cuda.is_available() is False")
    diffusers = import_diffusers()
    from diffusers import UNet2DModel

    meta = dict(device=a.device, device_name=(torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                              else platform.processor() or platform.machine()),
                threads=torch.get_num_threads(), torch=torch.__version__, diffusers=diffusers.__version__,
                batch=a.batch, iters=a.iters, warmup=a.warmup, sample_iters=a.sample_iters,
                sample_batch=a.sample_batch, attn=a.attn, tf32=a.tf32, quick=a.quick)
    out = {"meta": meta}
    meta["modes"] = modes

    def write_json():
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(out, indent=2) + "\n")

    for mode in modes:
        print(f"[torch_baseline] {mode} ...", flush=True)
        try:
            out[mode] = run_mode(mode, a, dev, UNet2DModel)
        except Exception as e:  # noqa: BLE001 -- report, don't crash the other mode
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]
            if MODES[mode][0]:
                msg = "compile failed: " + msg
            traceback.print_exc(limit=3)
            out[mode] = {"error": msg}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        write_json()
        r = out[mode]
        print(f"[torch_baseline] {mode}: " + (r["error"] if "error" in r else
              f"{r['train_ms_per_step']:.1f} ms/step, {r['train_img_per_s']:.0f} img/s"), flush=True)

    print(f"\ntorch {meta['torch']}  diffusers {meta['diffusers']}  device {a.device} ({meta['device_name']})  "
          f"threads {meta['threads']}  batch {a.batch}  attn {a.attn}")
    cols = [("train_ms_per_step", "train ms/step", "{:.1f}"), ("train_img_per_s", "train img/s", "{:.1f}"),
            ("peak_mem_bytes", "peak MiB", "{:.0f}"), ("sample80_img_per_s", "sample80 img/s", "{:.2f}"),
            ("sample_large_img_per_s", f"sample{a.sample_batch} img/s", "{:.2f}")]
    print(f"{'mode':13s} " + " ".join(f"{c[1]:>18s}" for c in cols))
    for mode in modes:
        r = out[mode]
        if "error" in r:
            print(f"{mode:13s} {r['error']}")
            continue
        cells = []
        for k, _, f in cols:
            v = r.get(k)
            if v is None:
                cells.append(f"{'-':>18s}")
            else:
                cells.append(f"{f.format(v / 2**20 if k == 'peak_mem_bytes' else v):>18s}")
        extra = f"   (compile {r['compile_s']:.1f}s)" if "compile_s" in r else ""
        print(f"{mode:13s} " + " ".join(cells) + extra)
    if a.json:
        write_json()
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
