#!/usr/bin/env python3
"""Writes the regression corpus of the fuzz harnesses: tests/fuzz/corpus/<harness>/<name>.

Every input named in issue 15 item 4 is here (the 100 MB header is generated at test time instead), plus
small valid seeds. Name prefixes are checked by tests/fuzz_regression_test.cpp:
  reject_*  the parser must reject it with its documented error type (entry returns 1);
  accept_*  the parser must accept it (entry returns 0);
  anything else must just not crash (fuzzer finds, minimised).
Run from the repository root: python3 scripts/make_fuzz_corpus.py
"""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fuzz", "corpus")
DEEP = 70000  # nesting levels: 140 KB of brackets, enough to overflow the stack of a recursive dump/copy


def deep(n=DEEP):
    return "[" * n + "]" * n


def write(harness, name, data):
    d = os.path.join(ROOT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def st_raw(header, data=b"", pad=b" "):
    """A safetensors file from a raw header string (no validation), padded to 8 bytes with `pad`."""
    h = header.encode() if isinstance(header, str) else header
    if pad:
        h += pad * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_file(tensors, metadata=None):
    """A valid safetensors file: tensors = [(name, dtype, shape, bytes)], contiguous offsets."""
    header, off, data = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    return st_raw(json.dumps(header, separators=(",", ":")), data)


TINY = {"sample_size": 28, "in_channels": 2, "out_channels": 1, "block_out_channels": [8, 16],
        "layers_per_block": 1, "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "num_classes": 10,
        "class_emb_size": 1}
TRAIN_ARGS = {"epochs": 1, "max_steps": 0, "batch_size": 8, "lr": 0.001, "cfg_drop": 0.1, "seed": 0,
              "ema_decay": 0.0, "checkpoint_every": 0, "sample_every": 0, "limit": 64, "data": "d",
              "device": "cpu", "model_config": ""}


def ckpt(config_text, train_args=None, tensors=None):
    meta = {"format": "engine-fm-checkpoint-v1", "config": config_text, "step": "3", "epoch": "0",
            "batch_in_epoch": "3", "rng_seed": "1", "rng_offset": "2",
            "adamw": json.dumps({"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}),
            "ema_decay": "0", "train_args": train_args if train_args is not None else json.dumps(TRAIN_ARGS)}
    return st_file(tensors or [("class_emb.weight", "F32", [2, 1], struct.pack("<2f", 0.5, -1.0))], meta)


def with_key(base, key, raw_value):
    """JSON text of `base` with `key` set to the raw JSON text `raw_value` (which json.dumps cannot make)."""
    d = dict(base)
    d[key] = "@@"
    return json.dumps(d).replace('"@@"', raw_value)


def main():
    # ---- safetensors parser
    f32 = struct.pack("<4f", 1, 2, 3, 4)
    write("safetensors", "accept_valid_two_tensors", st_file(
        [("w", "F32", [2, 2], f32), ("b", "U8", [3], b"\x01\x02\x03"), ("e", "F64", [0, 5], b"")],
        {"format": "pt"}))
    write("safetensors", "accept_empty", st_raw("{}"))
    write("safetensors", "accept_tab_newline_padding", st_raw('{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
                                                             b"\x07", pad=b"\n"))
    write("safetensors", "reject_deep_shape",
          st_raw('{"a":{"dtype":"F32","shape":' + deep() + ',"data_offsets":[0,0]}}'))
    write("safetensors", "reject_deep_metadata", st_raw('{"__metadata__":{"config":' + deep(200) + "}}"))
    write("safetensors", "reject_deep_top_level", st_raw(deep(200)))
    write("safetensors", "reject_duplicate_data_offsets",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"data_offsets":[2,4]}}', b"abcd"))
    write("safetensors", "reject_duplicate_shape",
          st_raw('{"a":{"dtype":"U8","shape":[4],"shape":[2],"data_offsets":[0,2]}}', b"ab"))
    write("safetensors", "reject_duplicate_metadata_key",
          st_raw('{"__metadata__":{"k":"1","k":"2"}}'))
    write("safetensors", "reject_shape_overflow_zero_first",
          st_raw('{"a":{"dtype":"F32","shape":[0,281474976710656,281474976710656],"data_offsets":[0,0]}}'))
    write("safetensors", "reject_shape_overflow_zero_last",
          st_raw('{"a":{"dtype":"F32","shape":[281474976710656,281474976710656,0],"data_offsets":[0,0]}}'))
    write("safetensors", "reject_gap_between_tensors",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                 '"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}', b"abcdef"))
    write("safetensors", "reject_gap_at_start",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}', b"abcd"))
    write("safetensors", "reject_trailing_bytes",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"abXYZ"))
    write("safetensors", "reject_nul_padding",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab", pad=b"\0"))
    write("safetensors", "reject_nul_then_garbage",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}\0{"b":', b"ab"))
    write("safetensors", "reject_leading_space", st_raw(' {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab"))
    write("safetensors", "reject_empty_tensor_name",
          st_raw('{"":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab"))
    write("safetensors", "reject_unknown_field",
          st_raw('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"offsets":[0,2]}}', b"ab"))
    write("safetensors", "reject_zero_size_inside_other",
          st_raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                 '"b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}', b"abcd"))

    # ---- checkpoint reader (safetensors + metadata)
    tiny = json.dumps(TINY)
    write("checkpoint", "accept_valid_training_checkpoint", ckpt(tiny))
    write("checkpoint", "accept_plain_weights", st_file([("conv.weight", "F32", [1], struct.pack("<f", 1))]))
    write("checkpoint", "reject_deep_config", ckpt(deep()))
    write("checkpoint", "reject_deep_block_out_channels", ckpt(with_key(TINY, "block_out_channels", deep())))
    write("checkpoint", "reject_deep_train_args", ckpt(tiny, train_args='{"x":' + deep(200) + "}"))
    write("checkpoint", "reject_in_channels_1e300", ckpt(with_key(TINY, "in_channels", "1e300")))
    write("checkpoint", "reject_duplicate_config_key",
          ckpt(tiny[:-1] + ', "in_channels": 3}'))
    write("checkpoint", "reject_train_args_batch_size_1e300",
          ckpt(tiny, train_args=with_key(TRAIN_ARGS, "batch_size", "1e300")))
    write("checkpoint", "reject_train_args_seed_negative",
          ckpt(tiny, train_args=with_key(TRAIN_ARGS, "seed", "-1")))
    write("checkpoint", "reject_shape_overflow",
          st_raw('{"x":{"dtype":"F32","shape":[0,281474976710656,281474976710656],"data_offsets":[0,0]}}'))

    # ---- --model-config JSON
    write("model_config", "accept_tiny", json.dumps(TINY, indent=1))
    write("model_config", "accept_integral_floats", with_key(TINY, "in_channels", "2.0"))
    write("model_config", "reject_deep_block_out_channels", with_key(TINY, "block_out_channels", deep()))
    write("model_config", "reject_deep_top_level", deep(200))
    write("model_config", "reject_deep_unknown_key", with_key(TINY, "_extra", deep(65)))
    write("model_config", "reject_in_channels_1e300", with_key(TINY, "in_channels", "1e300"))
    write("model_config", "reject_in_channels_fraction", with_key(TINY, "in_channels", "3.5"))
    write("model_config", "reject_in_channels_negative", with_key(TINY, "in_channels", "-1"))
    write("model_config", "reject_in_channels_bool", with_key(TINY, "in_channels", "true"))
    write("model_config", "reject_in_channels_string", with_key(TINY, "in_channels", '"2"'))
    write("model_config", "reject_in_channels_2p63", with_key(TINY, "in_channels", "9223372036854775808"))
    write("model_config", "reject_layers_per_block_huge", with_key(TINY, "layers_per_block", "1e19"))
    write("model_config", "freq_shift_1e300", with_key(TINY, "freq_shift", "1e300"))
    write("model_config", "reject_duplicate_key", json.dumps(TINY)[:-1] + ', "in_channels": 3}')
    write("model_config", "reject_trailing_garbage", json.dumps(TINY) + " x")
    write("model_config", "reject_nul_then_garbage", json.dumps(TINY) + "\0garbage")

    # ---- IDX reader
    labels = struct.pack(">II", 0x801, 5) + bytes([1, 2, 3, 4, 5])
    images = struct.pack(">IIII", 0x803, 2, 2, 3) + bytes(range(12))
    write("idx", "accept_labels_raw", labels)
    write("idx", "accept_images_raw", images)
    write("idx", "accept_images_gzip", gzip.compress(images, mtime=0))
    write("idx", "accept_labels_two_gzip_members", gzip.compress(labels[:7], mtime=0) + gzip.compress(labels[7:], mtime=0))
    write("idx", "reject_gzip_junk_appended", gzip.compress(labels, mtime=0) + b"junk after the stream")
    write("idx", "reject_gzip_zero_bytes_appended", gzip.compress(images, mtime=0) + b"\0" * 8)
    write("idx", "reject_gzip_truncated", gzip.compress(images, mtime=0)[:-6])
    write("idx", "reject_raw_trailing_byte", labels + b"\0")
    write("idx", "reject_raw_truncated", images[:-1])
    write("idx", "reject_huge_declared_count", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 28, 28))
    write("idx", "reject_gzip_declares_more_than_it_can_hold",
          gzip.compress(struct.pack(">IIII", 0x803, 1000000, 28, 28), mtime=0))


if __name__ == "__main__":
    main()
