#!/usr/bin/env bash
# A base image for the runtime images made without any registry: a minimal Debian bookworm root with its Python
# (3.11, the Python images/versions.txt was resolved on), venv and CA certificates, made with debootstrap from a
# Debian mirror and imported into the engine. Needs root (debootstrap) and the docker client; DOCKER_HOST is honoured.
#
#   bash images/debian-base.sh TAG [TAR]
#       TAG   the image to create, e.g. ftc-base:bookworm; then `ftc image build cpu --base TAG`
#       TAR   keep the root file system as this tar and reuse it when it exists (debootstrap takes ~1 min)
#   DEBIAN_MIRROR   the mirror to bootstrap from (default http://deb.debian.org/debian)
set -euo pipefail
tag=${1:?usage: images/debian-base.sh TAG [TAR]}
tar=${2:-}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,ca-certificates

if [[ -z "$tar" || ! -f "$tar" ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (Debian: apt-get install debootstrap)" >&2; exit 2; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase --include="$packages" bookworm "$work/rootfs" "$mirror" >"$work/log" 2>&1 \
        || { tail -n 20 "$work/log" >&2; echo "debootstrap from $mirror failed" >&2; exit 1; }
    rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
    out=${tar:-$work/rootfs.tar}
    tar -C "$work/rootfs" -cf "$out.partial" . && mv "$out.partial" "$out"
    tar=$out
fi
# the settings a Dockerfile's FROM expects of an image: a PATH and a shell to run RUN steps with
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tar" "$tag" >/dev/null
echo "$tag"
