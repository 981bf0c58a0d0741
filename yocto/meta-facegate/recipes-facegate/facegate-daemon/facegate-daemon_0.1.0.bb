SUMMARY = "facegate kiosk daemon: face verification at the door, offline"
DESCRIPTION = "Captures camera frames, detects, checks and matches faces against an \
encrypted gallery shard on the device, and drives the door relay. Syncs with the \
facegate central server over MQTT."
HOMEPAGE = "https://example.invalid/facegate"
LICENSE = "Apache-2.0 & MIT & PD"
LIC_FILES_CHKSUM = " \
    file://models/LICENSE.yunet-2023mar;md5=${YUNET_LICENSE_MD5} \
    file://models/LICENSE.dlib-resnet29;md5=${DLIB_LICENSE_MD5} \
"
YUNET_LICENSE_MD5 = "2bab441cad6e56796bbbd90130807551"
DLIB_LICENSE_MD5 = "1339b5d6fb586e6f97e94dc3ac0d51dd"

# The source tree at a tagged commit; every crate is fetched by BitBake from
# crates.io (facegate-daemon-crates.inc, generated from Cargo.lock by
# tools/crates-inc.py), so the build itself runs offline.
SRC_URI = "git://example.invalid/facegate.git;protocol=https;branch=main \
           file://daemon.toml \
"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git"
S = "${UNPACKDIR}/git"

require facegate-daemon-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# Build the daemon package of the workspace.
CARGO_BUILD_FLAGS += "--package facegate-daemon --no-default-features"

# Frame sources: V4L2 cameras (nokhwa, needs libclang for bindgen) and OpenCV
# (RTSP/GStreamer/video files). Both on by default, like the desktop build.
PACKAGECONFIG ??= "camera opencv"
PACKAGECONFIG[camera] = ",,clang-native v4l-utils"
PACKAGECONFIG[opencv] = ",,opencv clang-native"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'camera', '--features camera', '', d)}"
CARGO_BUILD_FLAGS += "${@bb.utils.contains('PACKAGECONFIG', 'opencv', '--features opencv', '', d)}"
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"

do_install:append() {
    # Only the shipped default files of each model (weight-only int8); the
    # manifests list the f32 variants too, which are not installed.
    install -d ${D}${datadir}/facegate/models
    for m in yunet-2023mar dlib-resnet29; do
        install -m 0644 ${S}/models/$m.toml ${D}${datadir}/facegate/models/
        install -m 0644 ${S}/models/LICENSE.$m ${D}${datadir}/facegate/models/
    done
    install -m 0644 ${S}/models/yunet-2023mar-int8w.onnx ${D}${datadir}/facegate/models/
    install -m 0644 ${S}/models/dlib-resnet29-u8w.onnx ${D}${datadir}/facegate/models/

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/facegate-daemon.service ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/facegate.sysusers ${D}${nonarch_libdir}/sysusers.d/facegate.conf
    install -m 0644 ${S}/systemd/facegate.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/facegate.conf

    install -d -m 0750 ${D}${sysconfdir}/facegate
    install -m 0640 ${UNPACKDIR}/daemon.toml ${D}${sysconfdir}/facegate/daemon.toml
    chgrp facegate ${D}${sysconfdir}/facegate ${D}${sysconfdir}/facegate/daemon.toml
}

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/facegate --no-create-home \
    --shell /sbin/nologin --groups video,gpio --user-group facegate"

SYSTEMD_SERVICE:${PN} = "facegate-daemon.service"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${datadir}/facegate ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d"
CONFFILES:${PN} = "${sysconfdir}/facegate/daemon.toml"
