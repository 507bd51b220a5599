#!/usr/bin/env bash
# Data for a GPU window whose calls may each carry at most 64 MiB (the device tool's limit):
# MNIST, notMNIST and Fashion-MNIST fit in one call (~49 MiB); the CIFAR-10 tarball (166 MiB)
# goes in parts, one per call, and is reassembled on the GPU machine, where it stays between
# calls while the machine is held.
#
# Here (the data in $UQBENCH_DATA_DIR or DATA_DIR):
#   bash benchmarks/gpu/stage_data.sh pack [DATA_DIR] [PART_MB]
#     writes .gpu-data/ (the MNIST-family sets) and .gpu-cifar/1, 2, ... (parts of at most
#     PART_MB, default 60, with a manifest of sizes and sha256s), and prints what each call carries.
# On the GPU machine, first thing in every call (it is cheap when there is nothing new):
#   bash benchmarks/gpu/stage_data.sh unpack
#     moves whatever was carried into .cache/gpu-data/ (kept between calls), reassembles the
#     CIFAR-10 tarball once every part has arrived and checks its sha256, and prints which data
#     sets are ready. Then run with UQBENCH_DATA_DIR=$PWD/.cache/gpu-data.
set -euo pipefail
shopt -s nullglob
cmd=${1:-}
root=$PWD
stage=$root/.cache/gpu-data
case "$cmd" in
pack)
  src=${2:-${UQBENCH_DATA_DIR:-}}
  part_mb=${3:-60}
  [ -n "$src" ] && [ -d "$src" ] || { echo "stage_data.sh pack: no data folder (give DATA_DIR or set UQBENCH_DATA_DIR)" >&2; exit 2; }
  rm -rf .gpu-data .gpu-cifar
  mkdir -p .gpu-data
  for d in mnist notmnist fashion-mnist; do
    if [ -d "$src/$d" ]; then cp -rL "$src/$d" .gpu-data/; else echo "missing $src/$d (skipped)" >&2; fi
  done
  tarball=$src/cifar10/cifar-10-python.tar.gz
  if [ -f "$tarball" ]; then
    mkdir -p .gpu-cifar/tmp
    split -b "${part_mb}M" -d -a 2 "$tarball" .gpu-cifar/tmp/part.
    n=$(ls .gpu-cifar/tmp | wc -l)
    whole=$(sha256sum "$tarball" | cut -d' ' -f1)
    i=0
    for p in .gpu-cifar/tmp/part.*; do
      i=$((i + 1))
      mkdir -p ".gpu-cifar/$i"
      name=cifar-10-python.tar.gz.part$i-of-$n
      mv "$p" ".gpu-cifar/$i/$name"
      echo "$whole $n" >".gpu-cifar/$i/manifest"
      sha256sum ".gpu-cifar/$i/$name" | sed "s#  .*/#  #" >".gpu-cifar/$i/$name.sha256"
    done
    rmdir .gpu-cifar/tmp
  else
    echo "no $tarball: CIFAR-10 not staged" >&2
  fi
  du -sh .gpu-data .gpu-cifar/* 2>/dev/null
  echo "carry: [\".gpu-data\"] in one call; [\".gpu-cifar/1\"], [\".gpu-cifar/2\"], ... one per call"
  ;;
unpack)
  mkdir -p "$stage/parts"
  if [ -d .gpu-data ]; then
    for d in .gpu-data/*/; do
      name=$(basename "$d")
      rm -rf "${stage:?}/$name" && cp -r "$d" "$stage/$name"
    done
  fi
  for dir in .gpu-cifar/*/; do
    [ -d "$dir" ] || continue
    for f in "$dir"cifar-10-python.tar.gz.part*; do
      case "$f" in *.sha256) continue ;; esac
      [ -f "$f" ] || continue
      want=$(cut -d' ' -f1 "$f.sha256")
      got=$(sha256sum "$f" | cut -d' ' -f1)
      [ "$want" = "$got" ] || { echo "stage_data.sh: $(basename "$f") arrived damaged (sha256 differs)" >&2; exit 2; }
      cp "$f" "$stage/parts/" && cp "$dir/manifest" "$stage/parts/manifest"
    done
  done
  tarball=$stage/cifar10/cifar-10-python.tar.gz
  if [ ! -f "$tarball" ] && [ -f "$stage/parts/manifest" ]; then
    read -r whole n <"$stage/parts/manifest"
    have=$(ls "$stage"/parts/cifar-10-python.tar.gz.part* 2>/dev/null | wc -l)
    if [ "$have" -eq "$n" ]; then
      mkdir -p "$stage/cifar10"
      for i in $(seq 1 "$n"); do cat "$stage/parts/cifar-10-python.tar.gz.part$i-of-$n"; done >"$tarball.tmp"
      if [ "$(sha256sum "$tarball.tmp" | cut -d' ' -f1)" = "$whole" ]; then
        mv "$tarball.tmp" "$tarball" && rm -f "$stage"/parts/cifar-10-python.tar.gz.part*
      else
        rm -f "$tarball.tmp"
        echo "stage_data.sh: the reassembled CIFAR-10 tarball's sha256 differs" >&2; exit 2
      fi
    else
      echo "cifar10: $have of $n parts here"
    fi
  fi
  for d in mnist notmnist fashion-mnist cifar10; do
    if [ -d "$stage/$d" ]; then echo "ready: $d"; else echo "not here: $d"; fi
  done
  ;;
*)
  echo "usage: bash benchmarks/gpu/stage_data.sh pack [DATA_DIR] [PART_MB] | unpack" >&2
  exit 2
  ;;
esac
