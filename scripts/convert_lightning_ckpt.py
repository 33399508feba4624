#!/usr/bin/env python3
"""Convert a PyTorch Lightning checkpoint (or a plain state dict) of the reference
flow-matching recipe into a safetensors file the C++ engine loads.

The reference recipe's LightningModule holds the blog wrapper as ``self.model``,
so its ``.ckpt`` ``state_dict`` has keys such as::

    model.class_emb.weight
    model.model.conv_in.weight
    model.model.down_blocks.1.attentions.0.to_q.weight   (diffusers >= 0.17)

The output has the wrapper's own keys (``class_emb.weight``, ``model.conv_in.weight``,
...) as F32 tensors, and ``__metadata__``:

    config  JSON: the UNet2DModel config (seed recipe by default) + num_classes,
            class_emb_size (both inferred from ``class_emb.weight``'s shape)
    source  the input file name

Handled automatically:
  * ``.ckpt`` dicts with a ``state_dict`` entry (Lightning), dicts with
    ``model_state_dict`` / ``model`` / ``module`` entries, and plain state dicts;
  * the prefix to strip: ``model.`` when the keys look like ``model.class_emb.*``,
    nothing when they already start with ``class_emb.`` (override with --prefix;
    ``--prefix ''`` strips nothing). Keys outside the prefix (EMA copies, loss
    modules, ...) are dropped and listed;
  * ``_orig_mod.`` segments left by ``torch.compile``;
  * pre-0.17 diffusers attention names (``query/key/value/proj_attn`` ->
    ``to_q/to_k/to_v/to_out.0``);
  * half / bfloat16 tensors (converted to float32 unless --keep-dtype).

With diffusers installed, ``--validate`` builds the wrapper from the config and
loads the result with ``strict=True``.

Loading uses ``torch.load(weights_only=True)``; checkpoints that pickle custom
classes need ``--trust`` (weights_only=False: only for files you trust).

Examples:
  python scripts/convert_lightning_ckpt.py run/last.ckpt -o out/model.safetensors
  python scripts/convert_lightning_ckpt.py sd.pt -o m.safetensors --prefix ''
  python scripts/convert_lightning_ckpt.py x.ckpt -o m.safetensors --config '{"block_out_channels":[16,32,32]}'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import torch

# The seed model's config (UNet2DModel keys + num_classes, class_emb_size): configs/seed.json is its one
# source; keys starting with "_" are comments.
SEED_CONFIG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "seed.json")
with open(SEED_CONFIG_PATH) as _f:
    SEED_CONFIG = {k: v for k, v in json.load(_f).items() if not k.startswith("_")}

LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def load_checkpoint(path: str, trust: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # custom pickled classes in hyper_parameters, callbacks, ...
        if not trust:
            sys.exit(f"torch.load(weights_only=True) failed: {type(e).__name__}: {str(e)[:300]}\n"
                     "If you trust this file, rerun with --trust.")
        return torch.load(path, map_location="cpu", weights_only=False)


def extract_state_dict(obj) -> dict:
    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "module"):
            if k in obj and isinstance(obj[k], dict) and obj[k] and \
                    all(torch.is_tensor(v) for v in obj[k].values()):
                return dict(obj[k])
        if obj and all(torch.is_tensor(v) for v in obj.values()):
            return dict(obj)
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    sys.exit("could not find a state dict in the checkpoint (looked for state_dict / model_state_dict / "
             "model / module entries, or a plain name->tensor dict)")


def guess_prefix(keys) -> str:
    if any(k.startswith("class_emb.") for k in keys):
        return ""
    cands = sorted({m.group(1) for k in keys for m in [re.match(r"^(.*?)class_emb\.weight$", k)] if m},
                   key=lambda p: (p != "model.", len(p)))
    if len(cands) > 1:
        print(f"note: several wrappers in the checkpoint {cands}; using {cands[0]!r} (see --prefix)")
    return cands[0] if cands else "model."


def convert(sd: dict, prefix: str | None, keep_dtype=False, rename_legacy=True):
    sd = {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    if prefix is None:
        prefix = guess_prefix(sd.keys())
    out, dropped, renamed = {}, [], 0
    for k, v in sd.items():
        if not k.startswith(prefix):
            dropped.append(k)
            continue
        nk = k[len(prefix):]
        if rename_legacy and ".attentions." in nk:
            parts = nk.split(".")
            if len(parts) >= 2 and parts[-2] in LEGACY_ATTN:
                nk = ".".join(parts[:-2] + [LEGACY_ATTN[parts[-2]], parts[-1]])
                renamed += 1
        if not v.is_floating_point() and nk.endswith("num_batches_tracked"):
            dropped.append(k)
            continue
        v = v.detach()
        if v.is_floating_point() and not keep_dtype:
            v = v.float()
        out[nk] = v.contiguous().clone()
    return out, prefix, dropped, renamed


def build_config(out: dict, override: dict) -> dict:
    cfg = dict(SEED_CONFIG)
    if "class_emb.weight" in out:
        cfg["num_classes"], cfg["class_emb_size"] = map(int, out["class_emb.weight"].shape)
    cfg.update(override)
    cfg["in_channels"] = 1 + cfg["class_emb_size"]
    if "model.conv_in.weight" in out:
        w = out["model.conv_in.weight"]
        if w.shape[1] != cfg["in_channels"]:
            print(f"warning: conv_in has {w.shape[1]} input channels, config says {cfg['in_channels']}")
    return cfg


def validate(out: dict, cfg: dict):
    try:
        from diffusers import UNet2DModel
    except ImportError:
        sys.exit("--validate needs diffusers")
    import torch.nn as nn

    class ConditionalUnet(nn.Module):
        def __init__(self, unet_config, num_classes, class_emb_size):
            super().__init__()
            self.class_emb = nn.Embedding(num_classes, class_emb_size)
            self.model = UNet2DModel(**unet_config)

    ucfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items()
            if k not in ("num_classes", "class_emb_size")}
    m = ConditionalUnet(ucfg, cfg["num_classes"], cfg["class_emb_size"])
    m.load_state_dict({k: v.float() for k, v in out.items()}, strict=True)
    print(f"validate: strict load into diffusers wrapper OK ({len(out)} tensors)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("input", help=".ckpt (Lightning) or .pt/.pth/.bin state dict")
    ap.add_argument("-o", "--out", required=True, help="output .safetensors")
    ap.add_argument("--prefix", default=None,
                    help="key prefix to strip (default: auto, 'model.' for Lightning ckpts)")
    ap.add_argument("--config", default=None, help="JSON overrides of the seed UNet config (string or file)")
    ap.add_argument("--keep-dtype", action="store_true", help="keep fp16/bf16 instead of converting to F32")
    ap.add_argument("--no-legacy-rename", action="store_true", help="keep query/key/value/proj_attn names")
    ap.add_argument("--trust", action="store_true", help="allow torch.load(weights_only=False)")
    ap.add_argument("--validate", action="store_true", help="strict-load the result into diffusers' wrapper")
    a = ap.parse_args(argv)

    from safetensors.torch import save_file

    ckpt = load_checkpoint(a.input, a.trust)
    sd = extract_state_dict(ckpt)
    out, prefix, dropped, renamed = convert(sd, a.prefix, a.keep_dtype, not a.no_legacy_rename)
    if not out:
        sys.exit(f"no keys under prefix {prefix!r}; first keys: {list(sd)[:5]}")
    override = {}
    if a.config:
        text = open(a.config).read() if os.path.exists(a.config) else a.config
        override = json.loads(text)
    cfg = build_config(out, override)
    if "class_emb.weight" not in out:
        print("warning: no class_emb.weight in the result -- wrong --prefix?")
    meta = {"config": json.dumps(cfg), "source": os.path.basename(a.input)}
    for k in ("epoch", "global_step", "pytorch-lightning_version"):
        if isinstance(ckpt, dict) and k in ckpt and isinstance(ckpt[k], (int, str)):
            meta[k] = str(ckpt[k])
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(out, a.out, metadata=meta)
    n = sum(v.numel() for v in out.values())
    print(f"wrote {a.out}: {len(out)} tensors, {n} parameters, stripped prefix {prefix!r}"
          + (f", renamed {renamed} legacy attention keys" if renamed else ""))
    if dropped:
        print(f"dropped {len(dropped)} keys outside the prefix: {dropped[:8]}{' ...' if len(dropped) > 8 else ''}")
    if a.validate:
        validate(out, cfg)


if __name__ == "__main__":
    main()
