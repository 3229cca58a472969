#!/usr/bin/env bash
# make image: the serving image of one variant (deploy/Containerfile), built with podman; its size -> reports/bench/image.json
#
#   deploy/build_image.sh            # VARIANT=int8_dynamic IMAGE=llm-lifecycle-serve:<variant>, from models/
#   VARIANT=onnx_fp32 deploy/build_image.sh
#   MODEL_REF=compressed@prod deploy/build_image.sh   # a registry version (lifecycle.registry): also tagged
#                                    # <IMAGE>-<version> (llm-lifecycle-serve:int8_dynamic-v1.1.0), with its
#                                    # REGISTRY.json and MODEL_CARD.md, so the server names the version it serves
#   deploy/build_image.sh --dry-run  # stage the build context's models and list them; build nothing
#
# The build context's models are staged in .image/models (hard links where the filesystem allows): the variant's lm
# and classifier folders, which carry their own tokenizer files. Without MODEL_REF they come from the working tree's
# models/; with it from `python -m lifecycle.registry` (dvc artifacts get, on this host: the image needs no git or
# DVC), cached per version in .registry/. REGISTRY_REPO (.) names the registry's git repository (a path or URL),
# REGISTRY_REMOTE its DVC remote (the repository's default).
#
# No registry can be reached here, so the Debian bookworm base is built once with debootstrap (as root) and kept as
# the local image $BASE. pip inside the build gets this machine's pip settings (index, find-links, certificates,
# constraints) as an /etc/pip.conf, with the local folders they name mounted read-only.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-int8_dynamic}
IMAGE=${IMAGE:-llm-lifecycle-serve:$VARIANT}
MODEL_REF=${MODEL_REF:-}
REGISTRY_REPO=${REGISTRY_REPO:-.}
REGISTRY_REMOTE=${REGISTRY_REMOTE:-}
STAGED=.image/models
DRY_RUN=0
[ "${1:-}" = --dry-run ] && DRY_RUN=1
# The base's packages; curl for `podman kube play`, which turns the Deployment's liveness probe into a curl check.
# The tag follows the list, so a changed list builds a new base.
BASE_PACKAGES=python3,python3-venv,ca-certificates,curl
BASE=${BASE:-localhost/llm-lifecycle-base:bookworm-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-8)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers.conf}
PODMAN=(podman --runtime runc)

die() { echo "build_image: $*" >&2; exit 1; }

fetch_ref() {  # MODEL_REF's version into .registry/ -> "root<TAB>version<TAB>commit<TAB>stage" and $1 (its record)
  python3 - "$MODEL_REF" "$REGISTRY_REPO" "$REGISTRY_REMOTE" "$1" <<'PY'
import json, sys
from lifecycle.core import run
from lifecycle.registry import cached
def main():
    ref, repo, remote, out = sys.argv[1:5]
    root, info = cached(ref, ".registry", repo, remote or None)
    open(out, "w").write(json.dumps(info, indent=2) + "\n")
    print("\t".join([str(root), info["version"], info["commit"], info["stage"] or ""]))
run(main)
PY
}

stage_models() {  # $1: the models root to take VARIANT from -> $STAGED (hard links, else copies), nothing else there
  rm -rf "$STAGED"
  for kind in lm classifier; do
    mkdir -p "$STAGED/compressed/$kind"
    cp -RLl "$1/compressed/$kind/$VARIANT" "$STAGED/compressed/$kind/" 2>/dev/null \
      || { rm -rf "${STAGED:?}/compressed/$kind/$VARIANT"; cp -RL "$1/compressed/$kind/$VARIANT" "$STAGED/compressed/$kind/"; }
  done
}

VERSION= VERSION_IMAGE= COMMIT= STAGE=
ref_json=$(mktemp /tmp/llm-ref.XXXXXX)
trap 'rm -f "$ref_json"' EXIT
if [ -n "$MODEL_REF" ]; then
  echo "build_image: fetching $MODEL_REF from the registry in $REGISTRY_REPO"
  fetched=$(fetch_ref "$ref_json" | tail -n1) || die "$MODEL_REF: not fetched (the line above says why)"
  IFS=$'\t' read -r src VERSION COMMIT STAGE <<<"$fetched"
  case ${IMAGE##*/} in *:*) VERSION_IMAGE=$IMAGE-$VERSION ;; *) VERSION_IMAGE=$IMAGE:$VERSION ;; esac
  for kind in lm classifier; do
    [ -f "$src/compressed/$kind/$VARIANT/model.onnx" ] \
      || die "$MODEL_REF ($VERSION) has no $kind variant $VARIANT: $src/compressed/$kind/$VARIANT/model.onnx not found"
  done
else
  src=models
  for kind in lm classifier; do
    [ -f "models/compressed/$kind/$VARIANT/model.onnx" ] \
      || die "models/compressed/$kind/$VARIANT/model.onnx not found: run \`make repro\` (or \`dvc pull\`) first"
  done
fi
stage_models "$src"
if [ -n "$MODEL_REF" ]; then
  install -m 0644 "$ref_json" "$STAGED/REGISTRY.json"  # readable by the image's non-root user
  [ ! -f "$src/MODEL_CARD.md" ] || install -m 0644 "$src/MODEL_CARD.md" "$STAGED/MODEL_CARD.md"
fi
if [ "$DRY_RUN" = 1 ]; then
  echo "build_image: would build $IMAGE${VERSION_IMAGE:+ and $VERSION_IMAGE} (variant $VARIANT${VERSION:+, $MODEL_REF = $VERSION}) from $STAGED:"
  (cd "$STAGED" && find . -type f | sed 's|^\./||' | sort)
  exit 0
fi
command -v podman >/dev/null || die "podman not found: apt-get install podman runc debootstrap"

build_base() {  # a minimal Debian with python3 and venv, docs and apt lists dropped (about 2 min here, 130 MB)
  command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
  local root
  root=$(mktemp -d /tmp/llm-base.XXXXXX)
  echo "build_image: building the base $BASE with debootstrap (once)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$MIRROR" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/{doc,man,locale,info}/*
  tar -C "$root" -c . | "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
}
"${PODMAN[@]}" image exists "$BASE" || build_base

# This machine's pip settings as one pip.conf, and the local paths they name (to mount into the build).
work=$(mktemp -d /tmp/llm-image.XXXXXX)
trap 'rm -rf "$work" "$ref_json"' EXIT
python3 - "$work" <<'EOF'
import os, re, subprocess, sys
from pathlib import Path
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings = {}
for line in listed.splitlines():  # scope.key='value'; the environment (:env:) wins, as in pip
    match = re.match(r"(:env:|[\w-]+)\.([\w-]+)='(.*)'$", line)
    if match and (match[1] in ("global", "install", ":env:") and (match[2] not in settings or match[1] == ":env:")):
        settings[match[2]] = match[3]
mounts = set()
for value in settings.values():
    for word in value.split():
        path = word.removeprefix("file://")
        if path.startswith("/") and os.path.exists(path):
            mounts.add(str(Path(path).parent) if path.rstrip("/").endswith("/simple") else path)
Path(sys.argv[1], "pip.conf").write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
Path(sys.argv[1], "mounts").write_text("".join(f"{m}\n" for m in sorted(mounts)))
print(settings.get("extra-index-url", "https://download.pytorch.org/whl/cpu"), file=open(Path(sys.argv[1], "extra"), "w"))
EOF
volumes=(-v "$work/pip.conf:/etc/pip.conf:ro")
while read -r path; do volumes+=(-v "$(realpath "$path"):$path:ro"); done <"$work/mounts"

# A registry version names the image: a second tag and OCI labels (podman image inspect shows them).
tags=(-t "$IMAGE")
labels=(--label "ai.llm-lifecycle.variant=$VARIANT")
if [ -n "$MODEL_REF" ]; then
  tags+=(-t "$VERSION_IMAGE")
  labels+=(--label "org.opencontainers.image.version=$VERSION" --label "org.opencontainers.image.revision=$COMMIT"
           --label "ai.llm-lifecycle.model-ref=$MODEL_REF")
fi
echo "build_image: building $IMAGE${VERSION_IMAGE:+ and $VERSION_IMAGE} (variant $VARIANT${VERSION:+, $MODEL_REF = $VERSION})"
"${PODMAN[@]}" build --network=host --format docker "${volumes[@]}" "${labels[@]}" \
  --build-arg BASE="$BASE" --build-arg VARIANT="$VARIANT" --build-arg PIP_EXTRA_INDEX_URL="$(cat "$work/extra")" \
  -f deploy/Containerfile "${tags[@]}" .

size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
base_size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE")
packages=$("${PODMAN[@]}" run --rm --no-healthcheck --network=host --entrypoint sh "$IMAGE" -c \
  'cd /opt/venv/lib/python3*/site-packages && du -sm . | cut -f1 && du -sm torch | cut -f1' | paste -sd' ')
MODEL_REF=$MODEL_REF VERSION_IMAGE=$VERSION_IMAGE \
python3 - "$IMAGE" "$VARIANT" "$size" "$base_size" $packages "$ref_json" <<'EOF'
import json, os, sys
from lifecycle.io import write_json
image, variant, size, base, packages, torch, ref_json = sys.argv[1:8]
mb = lambda b: round(int(b) / 1e6, 1)
ref = os.environ["MODEL_REF"]
registry = {"model_ref": ref, "model": json.load(open(ref_json)), "tags": [image, os.environ["VERSION_IMAGE"]]} \
    if ref else {"model_ref": None, "models": "the working tree's models/"}
write_json("reports/bench/image.json", {
    "image": image, "variant": variant, **registry, "size_mb": mb(size), "base_mb": mb(base),
    "python_packages_mb": int(packages), "torch_mb": int(torch),
    "torch_why": "the ONNX variants run through optimum's ORTModel classes, which take and return torch tensors, "
                 "and the server builds its batches and generates with torch; no variant serves without it"})
print(f"build_image: {image}: {mb(size)} MB (base {mb(base)} MB, Python packages {packages} MB, "
      f"of which torch {torch} MB) -> reports/bench/image.json")
EOF
