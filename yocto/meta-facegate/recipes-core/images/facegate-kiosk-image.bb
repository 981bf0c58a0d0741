SUMMARY = "facegate kiosk image: systemd, the facegate daemon, nothing else listening"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_INSTALL:append = " facegate-daemon v4l-utils"

# The daemon's state (gallery, device key) lives on the writable data
# partition mounted at /var/lib; systemd is the init manager.
DISTRO_FEATURES:append = " systemd usrmerge"
VIRTUAL-RUNTIME_init_manager = "systemd"
