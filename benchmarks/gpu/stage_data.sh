#!/usr/bin/env bash
# Data for a GPU window whose calls each move at most 64 MiB: the repository's working tree
# (tracked and untracked-not-ignored files) plus the folders the call carries.
# The data sets go as one archive cut into parts that fit beside the tree, one part per call;
# the GPU machine keeps the parts that arrived (in .cache/, which stays while the machine is
# held), and unpacks the archive, after checking its sha256, once every part is there.
#
# Here (the data in DATA_DIR or $UQBENCH_DATA_DIR):
#   bash benchmarks/gpu/stage_data.sh pack [DATA_DIR] [SETS]
#     SETS (default "mnist notmnist fashion-mnist cifar10"): the data set folders to send
#     (cifar10: its tarball only). Writes .gpu-stage/1, 2, ..., each one call's carry, and
#     prints them. PART_BYTES overrides the part size (default: 64 MiB minus the working tree
#     minus 2 MiB).
# The committed results (results/: run files, reports; ~70 MB) would by themselves fill a call,
# and a GPU run needs none of them, so for the window they stay here:
#   bash benchmarks/gpu/stage_data.sh slim     # before pack: results/ untracked and ignored
#   bash benchmarks/gpu/stage_data.sh unslim   # after the window: results/ tracked again
#   (slim leaves every file in place: it drops results/ from the index and lists it in
#   .git/info/exclude, so that it neither travels nor counts; commit nothing while slim.)
# On the GPU machine, first thing in every call (cheap when nothing was carried):
#   bash benchmarks/gpu/stage_data.sh unpack
#     prints "ready: <set>" for each data set unpacked into .cache/gpu-data, and how many parts
#     are still missing; then run with UQBENCH_DATA_DIR=$PWD/.cache/gpu-data.
set -euo pipefail
shopt -s nullglob
cmd=${1:-}
root=$PWD
stage=$root/.cache/gpu-data
parts=$root/.cache/gpu-stage
limit=$((64 * 1024 * 1024))

tree_bytes() {  # what every call moves besides its carry
  { git ls-files -z; git ls-files -z -o --exclude-standard; } 2>/dev/null \
    | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

exclude=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude)
marker="/results/"
note="# stage_data.sh slim (unslim removes these two lines)"

case "$cmd" in
slim)
  grep -qxF "$marker" "$exclude" 2>/dev/null && { echo "already slim"; exit 0; }
  git diff --cached --quiet \
    || { echo "stage_data.sh slim: commit or unstage the staged changes first" >&2; exit 2; }
  # The exclude first: an interrupted slim is then still one that unslim undoes.
  mkdir -p "$(dirname "$exclude")" && printf '%s\n%s\n' "$note" "$marker" >>"$exclude"
  git rm -r -q --cached results
  echo "slim: results/ stays here, untracked; the tree that travels is $(tree_bytes) bytes" \
    "(bash benchmarks/gpu/stage_data.sh unslim after the window)"
  ;;
unslim)
  # Only after a slim: a reset would also unstage changes under results/ made since.
  grep -qxF "$marker" "$exclude" 2>/dev/null || { echo "not slim"; exit 0; }
  git reset -q -- results
  if [ -f "$exclude" ]; then
    grep -vxF -e "$marker" -e "$note" "$exclude" >"$exclude.tmp" || true
    mv "$exclude.tmp" "$exclude"
  fi
  echo "unslim: results/ tracked again"
  ;;
pack)
  src=${2:-${UQBENCH_DATA_DIR:-}}
  sets=${3:-"mnist notmnist fashion-mnist cifar10"}
  [ -n "$src" ] && [ -d "$src" ] \
    || { echo "stage_data.sh pack: no data folder (give DATA_DIR or set UQBENCH_DATA_DIR)" >&2; exit 2; }
  members=()
  for s in $sets; do
    case $s in
      cifar10) f=cifar10/cifar-10-python.tar.gz ;;
      mnist | notmnist | fashion-mnist) f=$s ;;
      *) echo "stage_data.sh pack: unknown data set '$s' (mnist notmnist fashion-mnist cifar10)" >&2; exit 2 ;;
    esac
    [ -e "$src/$f" ] || { echo "stage_data.sh pack: $src/$f not found" >&2; exit 2; }
    members+=("$f")
  done
  part=${PART_BYTES:-$((limit - $(tree_bytes) - 2 * 1024 * 1024))}
  if [ -z "${PART_BYTES:-}" ] && [ "$part" -lt $((4 * 1024 * 1024)) ]; then
    echo "stage_data.sh pack: the working tree leaves only $part bytes a call for data" >&2; exit 2
  fi
  rm -rf .gpu-stage && mkdir -p .gpu-stage/tmp
  tar -cf - -C "$src" --dereference --mode=u+w "${members[@]}" \
    | split -b "$part" -d -a 3 - .gpu-stage/tmp/part.
  whole=$(cat .gpu-stage/tmp/part.* | sha256sum | cut -d' ' -f1)
  n=$(ls .gpu-stage/tmp/part.* | wc -l)
  i=0
  for p in .gpu-stage/tmp/part.*; do
    i=$((i + 1))
    mkdir -p ".gpu-stage/$i"
    mv "$p" ".gpu-stage/$i/data.tar.part$i-of-$n"
    echo "$whole $n $(sha256sum ".gpu-stage/$i/data.tar.part$i-of-$n" | cut -d' ' -f1)" \
      >".gpu-stage/$i/manifest"
  done
  rm -rf .gpu-stage/tmp
  echo "$sets: $n part(s) of at most $part bytes (archive sha256 $whole)"
  for i in $(seq 1 "$n"); do echo "call $i: carry [\".gpu-stage/$i\"]"; done
  ;;
unpack)
  mkdir -p "$parts"
  for dir in .gpu-stage/*/; do
    [ -f "$dir/manifest" ] || continue
    read -r whole n sum <"$dir/manifest"
    f=$(ls "$dir"data.tar.part*)
    [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ] \
      || { echo "stage_data.sh: $(basename "$f") arrived damaged (sha256 differs)" >&2; exit 2; }
    mkdir -p "$parts/$whole" && cp "$f" "$parts/$whole/"
  done
  for archive in "$parts"/*/; do
    whole=$(basename "$archive")
    files=("$archive"data.tar.part*)
    [ ${#files[@]} -gt 0 ] || continue
    n=${files[0]##*-of-}
    missing=0
    for i in $(seq 1 "$n"); do [ -f "${archive}data.tar.part$i-of-$n" ] || missing=$((missing + 1)); done
    if [ "$missing" -gt 0 ]; then echo "archive ${whole:0:12}: $missing of $n parts still to carry"; continue; fi
    got=$(for i in $(seq 1 "$n"); do cat "${archive}data.tar.part$i-of-$n"; done | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$whole" ]; then
      echo "stage_data.sh: the reassembled archive's sha256 differs" >&2; exit 2
    fi
    mkdir -p "$stage"
    for i in $(seq 1 "$n"); do cat "${archive}data.tar.part$i-of-$n"; done | tar -xf - -C "$stage"
    rm -rf "$archive"
  done
  for d in mnist notmnist fashion-mnist; do [ -d "$stage/$d" ] && echo "ready: $d"; done
  [ -f "$stage/cifar10/cifar-10-python.tar.gz" ] && echo "ready: cifar10"
  true
  ;;
*)
  echo "usage: bash benchmarks/gpu/stage_data.sh slim | pack [DATA_DIR] [SETS] | unpack | unslim" >&2
  exit 2
  ;;
esac
