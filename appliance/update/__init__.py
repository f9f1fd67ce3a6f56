"""A/B updates of the image: signed bundles written to the root slot that is not running, one boot
into it, marked good once the box is healthy, else back to the previous slot by itself.

bundle.py     the bundle format, its signature and verification
grubenv.py    GRUB's environment block, which tells GRUB which slot to boot
lifecycle.py  the steps of an update as plain data (the record, GRUB's variables, the status screen)
layout.py     where the slots, the ESP and the record are on the image
store.py      reading and writing the record and GRUB's variables
install.py    `appliance update FILE|URL`
health.py     what "healthy" means for a slot on trial
confirm.py    `appliance update --confirm`: the boot-time check that marks a slot good or goes back
reboot.py     `appliance reboot`: drain, then reboot
command.py    the two commands' entry points
"""
