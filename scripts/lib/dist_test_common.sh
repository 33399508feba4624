# Shared preamble of the data-parallel test scripts (scripts/test_mpi.sh, scripts/test_nccl.sh); sourced,
# not run. Usage, from a script run as SCRIPT BIN_DIR MNIST_DIR:
#   source "$(dirname "$0")/lib/dist_test_common.sh"
#   dist_test_setup "$@"
# dist_test_setup sets BIN and MNIST from the arguments (exit 2 with a usage line when one is missing),
# exits 77 (ctest: skipped) with a "SKIP: ..." line when mpirun or MNIST is missing, makes the temporary
# directory T (removed when the script exits) and writes the tiny UNet config $T/tiny.json.

dist_test_setup() {
  local script
  script=$(basename "$0")
  if [ $# -lt 2 ]; then echo "usage: $script BIN_DIR MNIST_DIR" >&2; exit 2; fi
  BIN=$1
  MNIST=$2
  command -v mpirun >/dev/null || { echo "SKIP: mpirun not found (apt-get install openmpi-bin)"; exit 77; }
  [ -f "$MNIST/train-images-idx3-ubyte.gz" ] || [ -f "$MNIST/train-images-idx3-ubyte" ] ||
    { echo "SKIP: MNIST not found in $MNIST"; exit 77; }
  T=$(mktemp -d "/tmp/${script%.sh}.XXXXXX")
  trap 'rm -rf "$T"' EXIT
  cat > "$T/tiny.json" <<'JSON'
{"sample_size": 28, "in_channels": 2, "out_channels": 1, "block_out_channels": [8, 16],
 "layers_per_block": 1, "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8, "num_classes": 10,
 "class_emb_size": 1}
JSON
}
