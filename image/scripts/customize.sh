#!/bin/sh
# Runs inside the new root file system (mmdebstrap's customize hook): the venv, users, units, boot files.
set -eu
work=/tmp/edgecall

# The project's wheel and its dependencies (wheels the build host fetched from PyPI), offline.
python3 -m venv /opt/edgecall
/opt/edgecall/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --no-index \
    --find-links "$work/wheels" "edgecall[fast]"
/opt/edgecall/bin/pip uninstall --quiet --yes pip setuptools
ln -s /opt/edgecall/bin/appliance /usr/local/bin/appliance
install -D -m 0644 "$work/README.md" /usr/share/doc/edgecall/README.md
# The image's version and the key its update bundles must be signed with (appliance/update/layout.py).
install -D -m 0644 "$work/version" /usr/lib/edgecall/version
install -D -m 0644 "$work/update.pub" /usr/lib/edgecall/update.pub

useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin edgecall

install -m 0644 "$work"/systemd/*.service /etc/systemd/system/
systemctl enable systemd-networkd.service ssh.service appliance-config.service appliance-net.service \
    bird.service nats-server.service appliance.service appliance-announce.service appliance-update-confirm.service
# Nothing on the box asks the outside world anything it was not configured to.
systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
systemctl mask systemd-timesyncd.service 2>/dev/null || true
# What an appliance without LVM snapshots, crash dumps, foreign binaries, FUSE, debugfs or huge pages
# never uses, and the boot would spend time on: e2scrub's LVM snapshots, pstore, binfmt_misc, the
# dpkg database backup (the root file system is read-only), kernel command line network units.
systemctl disable e2scrub_reap.service systemd-pstore.service dpkg-db-backup.timer \
    systemd-network-generator.service 2>/dev/null || true
systemctl mask systemd-binfmt.service proc-sys-fs-binfmt_misc.automount sys-fs-fuse-connections.mount \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount dev-hugepages.mount \
    modprobe@drm.service modprobe@fuse.service 2>/dev/null || true
# Generators for what the image does not have: SysV init scripts, partitions found by type (fstab
# names each one), boot counting of systemd-boot, hibernation, rc.local, encrypted or verity volumes.
mkdir -p /etc/systemd/system-generators
for generator in systemd-sysv-generator systemd-gpt-auto-generator systemd-bless-boot-generator \
        systemd-hibernate-resume-generator systemd-rc-local-generator systemd-cryptsetup-generator \
        systemd-integritysetup-generator systemd-veritysetup-generator systemd-system-update-generator; do
    ln -sf /dev/null "/etc/systemd/system-generators/$generator"
done

# No password for anyone: the operator logs in with a key from the EDGECALL partition.
passwd --lock root
# Every box makes its own host keys and machine id on first boot.
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
mkdir -p /etc/appliance
# agetty shows /etc/issue: the boot step's message, or Debian's when that is missing.
mv /etc/issue /usr/lib/issue
ln -s /run/appliance/issue /etc/issue

# Drivers a network appliance never uses: sound, cameras, Wi-Fi, Bluetooth, GPUs (the console is
# the firmware's frame buffer or serial), and cluster or network file systems.
for kernel in /usr/lib/modules/*; do
    for dir in sound drivers/media drivers/net/wireless drivers/bluetooth net/bluetooth net/mac80211 net/wireless \
               drivers/gpu drivers/staging drivers/infiniband drivers/iio drivers/isdn drivers/input/joystick \
               fs/ocfs2 fs/gfs2 fs/ceph fs/nfs fs/nfsd fs/smb fs/afs fs/coda fs/orangefs fs/ubifs fs/jffs2 \
               fs/nilfs2 fs/f2fs fs/reiserfs fs/jfs fs/xfs fs/btrfs fs/dlm; do
        rm -rf "$kernel/kernel/$dir"
    done
    depmod "$(basename "$kernel")"
done
update-initramfs -u -k all
rm -rf /usr/share/doc/*/changelog* /usr/share/locale/* /var/cache/apt/* /var/lib/apt/lists/* /tmp/*
