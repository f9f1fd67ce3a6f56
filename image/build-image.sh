#!/usr/bin/env bash
# The firmware image: build/edgecall-<version>.img (raw GPT) and .qcow2 beside it, and the signed update
# bundle build/edgecall-<version>.update (appliance/update/bundle.py) that `appliance update` installs.
# Usage: image/build-image.sh PYTHON (a Python with pip and this project's dependencies, for the wheel and its pins).
# EDGECALL_SIGNING_KEY=FILE: the Ed25519 key (PEM) that signs the bundle; the image trusts its public half.
# Without it, a development key made once under build/ signs, and the build says so.
#
# Debian bookworm packages (mmdebstrap) plus the project's wheel and its PyPI dependencies in a
# venv at /opt/edgecall; root is a squashfs (read-only by nature) in slot A of two; GRUB boots it
# from both legacy BIOS (core.img in a bios_grub partition) and UEFI (BOOTX64.EFI on the ESP),
# with one grub.cfg on the ESP: GRUB is the one loader in Debian that does both.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=$1
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
OUT=$ROOT/build
WORK=$OUT/image-work
IMG=$OUT/edgecall-$VERSION.img
MIRROR=http://deb.debian.org/debian
# Fixed so that a rebuild of the same commit from the same packages lays out the same disk.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
SEED=6e2b1a52-43c1-4b8e-9d55-ed9ec0a11e07

say() { printf 'image: %s\n' "$*" >&2; }
step() { say "$1 ($(( SECONDS - started )) s so far)"; }
started=$SECONDS

# mmdebstrap unmounts the root's /sys and /proc when it ends, unless something held them busy then (a
# process walking build/): never let rm -rf walk into a live mount that a build left.
findmnt -rno TARGET | awk -v work="$WORK/" 'index($0, work) == 1' | sort -r | while read -r target; do umount -l "$target"; done
rm -rf "$WORK"
mkdir -p "$WORK"/{hook,staging/esp/grub,staging/esp/EFI/BOOT,staging/config,grub}

step "update signing key"
KEY=${EDGECALL_SIGNING_KEY:-}
if [ -z "$KEY" ]; then
    KEY=$OUT/update-signing-dev.pem
    [ -e "$KEY" ] || "$PYTHON" image/scripts/bundle.py keygen "$KEY"
    say "EDGECALL_SIGNING_KEY is not set: signing with the development key $KEY (boxes built now accept only"
    say "bundles signed with it; give a key of your own for boxes that leave this machine)"
fi
[ -r "$KEY" ] || { say "cannot read the signing key $KEY"; exit 1; }
"$PYTHON" image/scripts/bundle.py public-key "$KEY" > "$WORK/hook/update.pub"
printf '%s\n' "$VERSION" > "$WORK/hook/version"

step "wheels: the project's, and its dependencies at the versions the test suite runs with"
# Fetched here, on the build host (its pip settings reach PyPI); the image's chroot installs offline.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" . >/dev/null
"$PYTHON" -m pip freeze --exclude-editable > "$WORK/constraints.txt"
"$PYTHON" -m pip wheel --quiet --wheel-dir "$WORK/hook/wheels" --constraint "$WORK/constraints.txt" \
    "$(ls "$WORK"/dist/edgecall-*.whl)[fast]" >/dev/null
cp -r systemd README.md image/scripts/customize.sh "$WORK/hook/"

step "root file system from Debian bookworm (mmdebstrap)"
ROOTFS=$WORK/rootfs
mmdebstrap --quiet --variant=minbase --mode=root \
    --include="$(grep -v '^#' image/packages | paste -sd, -)" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="sync-in image/overlay /" \
    --customize-hook="copy-in $WORK/hook /tmp" \
    --customize-hook='mv "$1/tmp/hook" "$1/tmp/edgecall" && chroot "$1" /bin/sh /tmp/edgecall/customize.sh' \
    bookworm "$ROOTFS" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"

step "checking the units inside the image (systemd-analyze verify)"
(cd "$ROOTFS/etc/systemd/system" && SYSTEMD_LOG_LEVEL=err systemd-analyze verify --root="$ROOTFS" \
    $(cd "$ROOT/systemd" && ls *.service)) || { say "systemd-analyze verify failed"; exit 1; }

step "boot files: slot A's kernel and initrd, GRUB for BIOS and UEFI and its environment block"
cp "$ROOTFS"/boot/vmlinuz-* "$WORK/staging/esp/vmlinuz-a"
cp "$ROOTFS"/boot/initrd.img-* "$WORK/staging/esp/initrd-a.img"
cp image/grub/grub.cfg "$WORK/staging/esp/grub/grub.cfg"
grub-editenv "$WORK/staging/esp/grub/grubenv" create
grub-editenv "$WORK/staging/esp/grub/grubenv" set edgecall_good=a
MODULES="part_gpt fat search search_label configfile normal linux echo test sleep serial terminal loadenv"
grub-mkimage -O i386-pc -o "$WORK/grub/core.img" -c image/grub/early.cfg -p /grub $MODULES biosdisk
grub-mkimage -O x86_64-efi -o "$WORK/staging/esp/EFI/BOOT/BOOTX64.EFI" -c image/grub/early.cfg -p /grub \
    $MODULES efi_gop efi_uga all_video

step "file systems: squashfs root, FAT ESP and EDGECALL, ext4 state"
# /var is the state partition's content; /boot's files are on the ESP.
mksquashfs "$ROOTFS" "$WORK/root.squashfs" -quiet -noappend -comp zstd -Xcompression-level 19 \
    -wildcards -e 'var/*' 'boot/*' 'tmp/*'
fat() {  # fat FILE MiB FAT-BITS LABEL VOLUME-ID DIR
    rm -f "$1"
    mkfs.fat -C "$1" $(( $2 * 1024 )) -F "$3" -n "$4" -i "$5" --invariant >/dev/null
    mcopy -s -p -m -i "$1" "$6"/* ::
}
fat "$WORK/esp.fat" 64 32 ECBOOT EC0B0001 "$WORK/staging/esp"
cp image/config/* "$WORK/staging/config/"
fat "$WORK/config.fat" 16 16 EDGECALL EC0B0002 "$WORK/staging/config"
rm -f "$WORK/state.ext4"
mkfs.ext4 -q -L state -U clear -E root_owner=0:0,hash_seed=$SEED -d "$ROOTFS/var" "$WORK/state.ext4" 96M

step "disk layout (systemd-repart)"
rm -f "$IMG"
mkdir -p "$WORK/repart.d"
for def in image/repart.d/*.conf; do sed "s|@WORK@|$WORK|g" "$def" > "$WORK/repart.d/$(basename "$def")"; done
systemd-repart --empty=create --size=auto --seed="$SEED" --definitions="$WORK/repart.d" \
    --dry-run=no --no-pager "$IMG" >"$WORK/repart.log" 2>&1 || { cat "$WORK/repart.log" >&2; exit 1; }
"$PYTHON" image/scripts/bios_boot.py "$IMG" "$WORK/grub/core.img" /usr/lib/grub/i386-pc/boot.img

step "qcow2 beside it"
qemu-img convert -c -O qcow2 "$IMG" "${IMG%.img}.qcow2"

step "update bundle: slot A's root file system, kernel and initrd, signed"
BUNDLE=$OUT/edgecall-$VERSION.update
"$PYTHON" image/scripts/bundle.py write --key "$KEY" --version "$VERSION" --out "$BUNDLE" \
    "$WORK/staging/esp/vmlinuz-a" "$WORK/staging/esp/initrd-a.img" "$WORK/root.squashfs"

elapsed=$(( SECONDS - started ))
raw=$(stat -c %s "$IMG")
qcow=$(stat -c %s "${IMG%.img}.qcow2")
say "built in $elapsed s"
printf '%s\t%d MiB (raw GPT; %d MiB used by data)\n' "$IMG" $(( raw / 1048576 )) $(( $(du -k "$IMG" | cut -f1) / 1024 ))
printf '%s\t%d MiB (qcow2, compressed)\n' "${IMG%.img}.qcow2" $(( qcow / 1048576 ))
printf '%s\t%d MiB (update bundle, signed with %s)\n' "$BUNDLE" $(( $(stat -c %s "$BUNDLE") / 1048576 )) "$KEY"
