#!/usr/bin/env python3
"""Generate reference fixtures for the C++ UNet2DModel / flow-matching engine.

Dev-time tool only: it builds the *real* diffusers ``UNet2DModel`` inside the
blog's class-conditional wrapper (``ConditionalUnet`` below), runs one
flow-matching loss evaluation, its backward pass and a few AdamW steps in
PyTorch, and writes everything the C++ tests compare against into a single
safetensors file.

Fixture layout (all float tensors F32, or F64 with ``--dtype float64``):

  params.<key>    initial wrapper parameters (``class_emb.weight``,
                  ``model.<diffusers key>``), constructed under
                  ``torch.manual_seed(seed)`` and then perturbed with
                  ``p += 0.05 * randn_like(p)`` (so GroupNorm weights are not 1,
                  biases are not 0 and ``conv_out`` is not zero).
  inputs.x        (B,1,H,W) uniform in [-1, 1]       (the "data" sample)
  inputs.noise    (B,1,H,W) standard normal
  inputs.sigma    (B,)      uniform in [0.006, 0.994]
  inputs.labels   (B,)      I64 in [0, num_classes)
  inputs.drop     (B,)      U8, 1 = class embedding zeroed (CFG drop); both
                            values appear whenever B >= 2
  outputs.pred    (B,1,H,W) wrapper(x_t, t, labels, drop) with
                            x_t = (1 - s) * x + s * noise  (s = sigma per sample)
                            t   = sigma * time_scale       (1-D float tensor)
  outputs.loss    (1,)      mean((pred - (noise - x))**2)
  grads.<key>     d loss / d param at the initial parameters
  after.<key>     parameters after ``steps`` torch.optim.AdamW steps, each step
                  recomputing the loss on the same inputs

  __metadata__: config (JSON: UNet2DModel config + num_classes, class_emb_size),
                adamw (JSON: lr, betas, eps, weight_decay), steps, time_scale,
                plus informational keys (seed, dtype, attn_processor,
                torch_version, diffusers_version).

Float64-reference fixtures (``--f64-reference``; ``*_f64ref.safetensors``): the keys above, every
float tensor F64 and computed by PyTorch in float64 throughout (model ``.double()``, SDPA attention,
the timestep embedding patched to float64, see ``_get_timestep_embedding_f64``), from parameters and
inputs drawn in float32 and widened; plus ``torch32.outputs.pred``, ``torch32.outputs.loss``,
``torch32.grads.<key>``, ``torch32.after.<key>``: PyTorch's float32 results (classic AttnProcessor)
from the same start, widened to F64. Metadata adds ``format`` = ``f64-reference`` and
``torch32_attn_processor``. reference_check then checks the engine in float64 against the reference
(1e-9) and the engine in float32 against PyTorch's own float32 error.

Additional outputs:
  --state-dict-out FILE  plain ``safetensors.torch.save_file`` of the wrapper's
                         (perturbed, initial) state dict, un-prefixed keys
                         ``class_emb.weight``, ``model.*`` -- a genuine
                         PyTorch-written file for loader tests.
  --io-out FILE          ``inputs.*`` + ``outputs.pred`` (+ ``outputs.loss``)
                         for that state dict.

Presets (``--config NAME``): tiny, tiny_variant, medium, seed, two_block, tiny_f64, tiny_variant_f64.  ``--config`` also
accepts a JSON object (string or path to a .json file) of overrides applied to
the ``seed`` preset.  ``--all`` regenerates every standard fixture of the repo.

The attention processor is forced to diffusers' classic ``AttnProcessor``
(explicit baddbmm + fp32 softmax, what ``set_default_attn_processor`` selects);
``--attn-processor sdpa`` keeps ``AttnProcessor2_0`` instead. Both agree to
float32 rounding (pred ~5e-7 relative). In float64 mode SDPA is the default,
because the classic processor's ``upcast_softmax`` casts the scores to *fp32*.

Caveat for comparisons: ``grads.*.attentions.*.to_k.bias`` is mathematically
zero (softmax is invariant to a per-query shift of the scores, and the key bias
adds exactly such a shift); the stored values are float rounding noise
(~1e-10). Compare those with an absolute tolerance, not a relative one.

Examples:
  python tests/reference/make_fixtures.py --all
  python tests/reference/make_fixtures.py --config tiny --out /tmp/tiny.safetensors
  python tests/reference/make_fixtures.py --config '{"block_out_channels":[16,32]}' \
      --batch 2 --image-size 8 --out /tmp/x.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

try:
    import diffusers
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
except ImportError as e:  # pragma: no cover
    sys.exit(f"make_fixtures.py needs diffusers (pip install diffusers safetensors): {e}")

from safetensors.torch import save_file
import diffusers.models.embeddings as _diffusers_embeddings

HERE = Path(__file__).resolve().parent

# diffusers' get_timestep_embedding computes the sinusoid in float32 whatever the model's dtype
# (torch.arange(..., dtype=torch.float32), timesteps.float()), so a ".double()" UNet still rounds its
# timestep embedding to float32, and a float64 reference would carry a float32 error of up to ~3e-5 at
# t ~ 1000. A float64 reference must be float64 throughout: for float64 timesteps (a float64 model gets
# float64 timesteps from fm_loss) we compute the same formula, in the same order, in float64. The C++
# engine does the same for float64 models (nn::Timesteps) and keeps diffusers' float32 order otherwise.
# float32 timesteps still go to diffusers' own function, so float32 runs are untouched.
_diffusers_get_timestep_embedding = _diffusers_embeddings.get_timestep_embedding


def _get_timestep_embedding_f64(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1,
                                scale=1, max_period=10000):
    if timesteps.dtype != torch.float64:
        return _diffusers_get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=flip_sin_to_cos,
                                                 downscale_freq_shift=downscale_freq_shift, scale=scale,
                                                 max_period=max_period)
    assert len(timesteps.shape) == 1, "Timesteps should be a 1d-array"
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float64,
                                                     device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None] * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


# Timesteps.forward looks the function up in its module's globals at call time.
_diffusers_embeddings.get_timestep_embedding = _get_timestep_embedding_f64

# UNet2DModel config keys recorded in the fixture metadata (the C++ side reads
# exactly these; everything else is left at the diffusers default).
CONFIG_KEYS = [
    "sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
    "down_block_types", "up_block_types", "attention_head_dim", "norm_num_groups", "norm_eps",
    "flip_sin_to_cos", "freq_shift", "downsample_padding", "mid_block_scale_factor", "add_attention",
]

# The seed model's config (UNet2DModel keys + num_classes, class_emb_size): configs/seed.json is its one
# source; keys starting with "_" are comments.
SEED_CONFIG = {k: v for k, v in json.loads((Path(__file__).resolve().parents[2] / "configs" / "seed.json")
                                           .read_text()).items() if not k.startswith("_")}

# preset name -> (config overrides on SEED_CONFIG, default batch, default image size)
PRESETS = {
    "seed": ({}, 3, 28),
    "tiny": (dict(block_out_channels=[8, 16, 16], norm_num_groups=4, layers_per_block=2,
                  attention_head_dim=8), 2, 16),
    "tiny_variant": (dict(block_out_channels=[8, 16], layers_per_block=2, attention_head_dim=4,
                          norm_num_groups=4, down_block_types=["AttnDownBlock2D", "DownBlock2D"],
                          up_block_types=["UpBlock2D", "AttnUpBlock2D"], class_emb_size=3,
                          num_classes=5, add_attention=False, flip_sin_to_cos=False,
                          freq_shift=1), 3, 8),
    "medium": (dict(block_out_channels=[16, 32, 32], norm_num_groups=8, layers_per_block=2,
                    attention_head_dim=16, class_emb_size=2), 2, 16),
    # two-block variant of the seed recipe (for float64-reference fixtures under large/)
    "two_block": (dict(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                       up_block_types=["AttnUpBlock2D", "UpBlock2D"]), 3, 28),
}
# The committed float64-reference fixtures hold five copies of the parameters in F64 (params, grads, after,
# torch32.grads, torch32.after), so they use smaller versions of tiny / tiny_variant (< 2 MB each): one
# layer per block, and tiny with channels (8, 8, 12) and head dim 4 (2 and 3 heads).
PRESETS["tiny_f64"] = (dict(PRESETS["tiny"][0], block_out_channels=[8, 8, 12], layers_per_block=1,
                            attention_head_dim=4), 2, 16)
PRESETS["tiny_variant_f64"] = (dict(PRESETS["tiny_variant"][0], layers_per_block=1), 3, 8)

DEFAULT_ADAMW = dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.01)
TIME_SCALE = 1000.0


class ConditionalUnet(nn.Module):
    """The blog's wrapper: class embedding concatenated as extra input channel(s)."""

    def __init__(self, unet_config, num_classes=10, class_emb_size=1):
        super().__init__()
        self.class_emb = nn.Embedding(num_classes, class_emb_size)
        self.model = UNet2DModel(**unet_config)  # in_channels = image channels + class_emb_size

    def forward(self, x, t, labels, drop):  # drop: (B,) bool, True = class embedding zeroed (CFG)
        emb = self.class_emb(labels) * (~drop).to(x.dtype)[:, None]  # (B, E)
        emb = emb[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.model(torch.cat([x, emb], 1), t).sample


def save_canonical(tensors: dict, path, metadata: dict) -> None:
    """safetensors.torch.save_file, then rewrite the JSON header with sorted keys.

    safetensors serialises ``__metadata__`` from a hash map, so its key order (and
    hence the file bytes) changes from run to run. Re-dumping the header sorted
    makes regenerated fixtures byte-identical; tensor offsets are untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    new = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])
    os.chmod(path, 0o644)


def resolve_config(spec: str) -> tuple[dict, int, int]:
    """Preset name, JSON string, or JSON file -> (full config, default batch, default size)."""
    if spec in PRESETS:
        over, batch, size = PRESETS[spec]
    else:
        text = Path(spec).read_text() if os.path.exists(spec) else spec
        try:
            over = json.loads(text)
        except json.JSONDecodeError as e:
            sys.exit(f"--config: not a preset ({', '.join(PRESETS)}) nor valid JSON: {e}")
        batch, size = 2, over.get("sample_size", 28)
    cfg = dict(SEED_CONFIG)
    cfg.update(over)
    unknown = set(cfg) - set(CONFIG_KEYS) - {"num_classes", "class_emb_size"}
    if unknown:
        sys.exit(f"--config: unsupported keys {sorted(unknown)}")
    return cfg, batch, size


def build_wrapper(cfg: dict, image_size: int, seed: int, perturb: float) -> ConditionalUnet:
    cfg = dict(cfg)
    cfg["sample_size"] = image_size
    cfg["in_channels"] = 1 + cfg["class_emb_size"]
    cfg["out_channels"] = 1
    unet_cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in CONFIG_KEYS}
    torch.manual_seed(seed)
    model = ConditionalUnet(unet_cfg, cfg["num_classes"], cfg["class_emb_size"])
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def set_attn_processor(model: nn.Module, kind: str) -> str:
    name = None
    for m in model.modules():
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor() if kind == "classic" else AttnProcessor2_0())
            name = type(m.processor).__name__
    return name or "none"


def make_inputs(cfg: dict, batch: int, size: int, seed: int, dtype) -> dict:
    # drawn in float32 (then cast) so float64 fixtures share the float32 inputs
    g = torch.Generator().manual_seed(seed + 2)
    x = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(dtype)
    noise = torch.randn(batch, 1, size, size, generator=g).to(dtype)
    sigma = (0.006 + (0.994 - 0.006) * torch.rand(batch, generator=g)).to(dtype)
    labels = torch.randint(0, cfg["num_classes"], (batch,), generator=g, dtype=torch.int64)
    drop = torch.rand(batch, generator=g) < 0.5
    if batch >= 2 and (drop.all() or not drop.any()):
        drop[0], drop[-1] = False, True
    return dict(x=x, noise=noise, sigma=sigma, labels=labels, drop=drop)


def fm_loss(model, inp, time_scale):
    s = inp["sigma"][:, None, None, None]
    xt = (1 - s) * inp["x"] + s * inp["noise"]
    t = inp["sigma"] * time_scale  # 1-D float tensor: diffusers keeps fractional timesteps
    pred = model(xt, t, inp["labels"], inp["drop"])
    loss = ((pred - (inp["noise"] - inp["x"])) ** 2).mean()
    return pred, loss


def coverage(model, inp, time_scale) -> dict:
    """Which module kinds / code paths the forward pass actually runs."""
    seen = {}

    def hook(name):
        def f(mod, args, out):
            kind = type(mod).__name__
            if kind == "ResnetBlock2D" and mod.conv_shortcut is not None:
                kind = "ResnetBlock2D+conv_shortcut"
            seen.setdefault(kind, []).append(name)
        return f

    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D
    from diffusers.models.unets import unet_2d_blocks as B
    kinds = (ResnetBlock2D, Downsample2D, Upsample2D, Attention, B.DownBlock2D, B.AttnDownBlock2D,
             B.UpBlock2D, B.AttnUpBlock2D, B.UNetMidBlock2D)
    hs = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, kinds)]
    with torch.no_grad():
        fm_loss(model, inp, time_scale)
    for h in hs:
        h.remove()
    # skip concatenations with differing channel counts (hidden != skip)
    cats = []
    for n, m in model.named_modules():
        if isinstance(m, (B.UpBlock2D, B.AttnUpBlock2D)):
            cats += [r.in_channels for r in m.resnets]
    seen["skip_concat_in_channels"] = cats
    return seen


def run_torch(cfg, batch, size, seed, *, steps, adamw, time_scale, dtype, attn, perturb):
    """One PyTorch run in `dtype` from the float32-drawn start: pred, loss, grads, params after AdamW."""
    torch.use_deterministic_algorithms(True)
    model = build_wrapper(cfg, size, seed, perturb).to(dtype)
    proc = set_attn_processor(model, attn)
    model.train()  # dropout is 0; train mode only affects layout (.contiguous() in shortcut)
    inp = make_inputs(cfg, batch, size, seed, dtype)
    if dtype == torch.float64:  # the float64 timestep patch must be in effect (diffusers internals may move)
        t = inp["sigma"] * time_scale
        e = model.model.time_proj(t)
        half = e.shape[1] // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - cfg["freq_shift"]))
        sin = torch.sin(t[:, None] * f[None, :])
        assert e.dtype == torch.float64 and torch.allclose(e[:, half:] if cfg["flip_sin_to_cos"] else e[:, :half],
                                                           sin, rtol=0, atol=1e-14), "float64 timestep patch not used"

    def fl(t):
        return t.detach().to(dtype).contiguous().clone()

    names = [n for n, _ in model.named_parameters()]
    params0 = {n: fl(p) for n, p in model.named_parameters()}

    model.zero_grad(set_to_none=True)
    pred, loss = fm_loss(model, inp, time_scale)
    loss.backward()
    grads = {n: fl(p.grad) if p.grad is not None else torch.zeros_like(params0[n])
             for n, p in model.named_parameters()}

    opt = torch.optim.AdamW(model.parameters(), lr=adamw["lr"], betas=tuple(adamw["betas"]),
                            eps=adamw["eps"], weight_decay=adamw["weight_decay"], foreach=False)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _, l = fm_loss(model, inp, time_scale)
        losses.append(float(l.detach()))
        l.backward()
        opt.step()
    after = {n: fl(p) for n, p in model.named_parameters()}
    return dict(names=names, params0=params0, inp=inp, pred=fl(pred), loss=fl(loss).reshape(1), grads=grads,
                after=after, losses=losses, proc=proc, model=model)


def generate(cfg, batch, size, seed, out, *, steps=3, adamw=None, time_scale=TIME_SCALE,
             dtype=torch.float32, attn="classic", perturb=0.05, state_dict_out=None, io_out=None,
             write_fixture=True, verbose=True, f64_reference=False, attn32="classic"):
    """Write a fixture. f64_reference: float64 reference run (dtype is then float64, `attn` its attention
    processor) plus torch32.* from a float32 run (processor `attn32`) from the same start."""
    adamw = dict(adamw or DEFAULT_ADAMW)
    if f64_reference:
        dtype = torch.float64
    R = run_torch(cfg, batch, size, seed, steps=steps, adamw=adamw, time_scale=time_scale, dtype=dtype,
                  attn=attn, perturb=perturb)
    names, params0, inp, proc = R["names"], R["params0"], R["inp"], R["proc"]
    fdt = "F64" if dtype == torch.float64 else "F32"

    def fl(t):
        return t.detach().to(dtype).contiguous().clone()

    full_cfg = dict(cfg, sample_size=size, in_channels=1 + cfg["class_emb_size"], out_channels=1)
    meta = {
        "config": json.dumps({k: full_cfg[k] for k in CONFIG_KEYS + ["num_classes", "class_emb_size"]}),
        "adamw": json.dumps(adamw),
        "steps": str(steps),
        "time_scale": repr(float(time_scale)) if time_scale != int(time_scale) else str(int(time_scale)),
        "seed": str(seed),
        "dtype": fdt,
        "attn_processor": proc,
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
    }
    inputs = {
        "inputs.x": fl(inp["x"]), "inputs.noise": fl(inp["noise"]), "inputs.sigma": fl(inp["sigma"]),
        "inputs.labels": inp["labels"].contiguous(), "inputs.drop": inp["drop"].to(torch.uint8).contiguous(),
    }
    outputs = {"outputs.pred": R["pred"], "outputs.loss": R["loss"]}

    if write_fixture:
        t = {}
        t.update({f"params.{n}": params0[n] for n in names})
        t.update(inputs)
        t.update(outputs)
        t.update({f"grads.{n}": R["grads"][n] for n in names})
        t.update({f"after.{n}": R["after"][n] for n in names})
        if f64_reference:
            # PyTorch's float32 run from the same (float32-representable) start, widened to F64 (exact).
            R32 = run_torch(cfg, batch, size, seed, steps=steps, adamw=adamw, time_scale=time_scale,
                            dtype=torch.float32, attn=attn32, perturb=perturb)
            assert all(torch.equal(R32["params0"][n].double(), params0[n]) for n in names)
            assert all(torch.equal(R32["inp"][k].double(), inp[k]) for k in ("x", "noise", "sigma"))
            w = lambda x: x.detach().double().contiguous().clone()
            t["torch32.outputs.pred"] = w(R32["pred"])
            t["torch32.outputs.loss"] = w(R32["loss"])
            t.update({f"torch32.grads.{n}": w(R32["grads"][n]) for n in names})
            t.update({f"torch32.after.{n}": w(R32["after"][n]) for n in names})
            meta["format"] = "f64-reference"
            meta["torch32_attn_processor"] = R32["proc"]
            rel = lambda a, b: float((a - b).norm() / b.norm())
            worst_after = max(rel(t[f"torch32.after.{n}"], R["after"][n]) for n in names)
            if verbose:
                print(f"  torch32 vs float64: pred {rel(t['torch32.outputs.pred'], R['pred']):.2e}, "
                      f"loss {rel(t['torch32.outputs.loss'], R['loss']):.2e}, worst after {worst_after:.2e}")
        save_canonical(t, out, meta)
    if state_dict_out:
        # a genuine PyTorch state dict of the initial (perturbed) wrapper
        sd_model = build_wrapper(cfg, size, seed, perturb).to(dtype)
        sd = {k: v.contiguous() for k, v in sd_model.state_dict().items()}
        assert all(torch.equal(sd[n], params0[n]) for n in names)
        # plain safetensors.torch.save_file output (header order left as written)
        Path(state_dict_out).parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(state_dict_out), metadata={"format": "pt"})
        os.chmod(state_dict_out, 0o644)
    if io_out:
        save_canonical({**inputs, **outputs}, io_out, {k: meta[k] for k in ("config", "time_scale", "dtype", "attn_processor", "torch_version", "diffusers_version")})

    if verbose:
        nparam = sum(p.numel() for p in params0.values())
        print(f"[make_fixtures] B={batch} S={size} seed={seed} dtype={fdt} attn={proc} "
              f"params={nparam} tensors={len(names)} loss={float(R['loss']):.6f} "
              f"losses_during_adamw={['%.6f' % l for l in R['losses']]}")
        for path in (out if write_fixture else None, state_dict_out, io_out):
            if path:
                print(f"  wrote {path} ({os.path.getsize(path) / 1e6:.3f} MB)")
    return R["model"], inp


def check_processors(cfg, batch, size, seed, time_scale=TIME_SCALE):
    """Compare classic AttnProcessor vs AttnProcessor2_0 (SDPA) on this config."""
    m = build_wrapper(cfg, size, seed, 0.05)
    inp = make_inputs(cfg, batch, size, seed, torch.float32)
    res = {}
    for kind in ("classic", "sdpa"):
        set_attn_processor(m, kind)
        m.zero_grad(set_to_none=True)
        p, l = fm_loss(m, inp, time_scale)
        l.backward()
        res[kind] = (p.detach().clone(), [q.grad.clone() for q in m.parameters()])
    a, b = res["classic"], res["sdpa"]
    rel = lambda u, v: float((u - v).norm() / (v.norm() + 1e-30))
    return rel(a[0], b[0]), max(rel(u, v) for u, v in zip(a[1], b[1]))


F64REF = dict(f64_reference=True, attn="sdpa", attn32="classic")
STANDARD = [
    # (preset, out, extra kwargs)
    ("tiny", HERE / "tiny.safetensors", dict(state_dict_out=HERE / "tiny_state_dict.safetensors")),
    ("tiny_variant", HERE / "tiny_variant.safetensors", {}),
    ("tiny_f64", HERE / "tiny_f64ref.safetensors", F64REF),
    ("tiny_variant_f64", HERE / "tiny_variant_f64ref.safetensors", F64REF),
    ("seed", HERE / "large" / "seed_f64ref.safetensors", F64REF),
    ("two_block", HERE / "large" / "two_block_f64ref.safetensors", F64REF),
    ("medium", HERE / "large" / "medium.safetensors", {}),
    ("seed", HERE / "large" / "seed_b3.safetensors",
     dict(state_dict_out=HERE / "large" / "seed_wrapper_state.safetensors",
          io_out=HERE / "large" / "seed_wrapper_io.safetensors")),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring / tests/reference/README.md for the format.")
    ap.add_argument("--config", default="tiny",
                    help=f"preset ({', '.join(PRESETS)}) or JSON overrides of the seed config (string or file)")
    ap.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    ap.add_argument("--image-size", type=int, help="square image side (default: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="fixture file to write")
    ap.add_argument("--steps", type=int, default=3, help="AdamW steps for after.* (default 3)")
    ap.add_argument("--lr", type=float, default=DEFAULT_ADAMW["lr"])
    ap.add_argument("--weight-decay", type=float, default=DEFAULT_ADAMW["weight_decay"])
    ap.add_argument("--time-scale", type=float, default=TIME_SCALE)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                    help="compute + storage dtype (float64 stores F64 tensors)")
    ap.add_argument("--f64-reference", action="store_true",
                    help="float64-reference fixture: everything computed in float64 (F64 tensors, float64 "
                         "timestep embedding, SDPA attention) plus torch32.*: PyTorch's float32 results "
                         "(classic AttnProcessor) from the same start; implies --dtype float64")
    ap.add_argument("--attn-processor", choices=["classic", "sdpa"], default=None,
                    help="classic AttnProcessor (default for float32) or AttnProcessor2_0/SDPA (default for "
                         "float64, because the classic processor's upcast_softmax runs the softmax in fp32)")
    ap.add_argument("--state-dict-out", help="also write the plain wrapper state dict here")
    ap.add_argument("--io-out", help="also write inputs.* + outputs.* here")
    ap.add_argument("--coverage", action="store_true", help="print which blocks/code paths are exercised")
    ap.add_argument("--check-processors", action="store_true",
                    help="compare classic AttnProcessor against SDPA and print relative errors")
    ap.add_argument("--all", action="store_true", help="regenerate every standard fixture in tests/reference")
    a = ap.parse_args(argv)

    if a.f64_reference:
        a.dtype = "float64"
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    if a.attn_processor is None:
        a.attn_processor = "sdpa" if dtype == torch.float64 else "classic"
    adamw = dict(DEFAULT_ADAMW, lr=a.lr, weight_decay=a.weight_decay)
    if a.all:
        for preset, out, extra in STANDARD:
            cfg, b, s = resolve_config(preset)
            print(f"== {preset} -> {out.name}")
            kw = dict(dtype=dtype, attn=a.attn_processor)
            kw.update(extra)
            generate(cfg, b, s, a.seed, out, steps=a.steps, adamw=adamw, time_scale=a.time_scale, **kw)
        return

    cfg, b, s = resolve_config(a.config)
    batch, size = a.batch or b, a.image_size or s
    if not (a.out or a.state_dict_out or a.io_out or a.coverage or a.check_processors):
        ap.error("nothing to do: give --out (and/or --state-dict-out/--io-out/--coverage/--check-processors)")
    if a.out or a.state_dict_out or a.io_out:
        generate(cfg, batch, size, a.seed, a.out, steps=a.steps, adamw=adamw, time_scale=a.time_scale,
                 dtype=dtype, attn=a.attn_processor, state_dict_out=a.state_dict_out, io_out=a.io_out,
                 write_fixture=bool(a.out), f64_reference=a.f64_reference)
    if a.coverage:
        m = build_wrapper(cfg, size, a.seed, 0.05).to(dtype)
        set_attn_processor(m, a.attn_processor)
        cov = coverage(m, make_inputs(cfg, batch, size, a.seed, dtype), a.time_scale)
        for k, v in cov.items():
            print(f"  {k}: {len(v)} {v if k == 'skip_concat_in_channels' else v[:4]}")
    if a.check_processors:
        pr, gr = check_processors(cfg, batch, size, a.seed, a.time_scale)
        print(f"  classic vs sdpa: pred rel L2 {pr:.2e}, worst grad rel L2 {gr:.2e}")


if __name__ == "__main__":
    main()
