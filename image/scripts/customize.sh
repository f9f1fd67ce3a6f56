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

useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin edgecall

install -m 0644 "$work"/systemd/*.service /etc/systemd/system/
systemctl enable systemd-networkd.service ssh.service appliance-config.service appliance-net.service \
    bird.service nats-server.service appliance.service appliance-announce.service
# Nothing on the box asks the outside world anything it was not configured to.
systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
systemctl mask systemd-timesyncd.service 2>/dev/null || true

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
