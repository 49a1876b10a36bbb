#!/usr/bin/env bash
# build-deb.sh OUT - the Debian packages, from the files of this tree git
# knows or would add (committed or not; build directories and ignored files
# left out), built
# with dpkg-buildpackage in OUT/src and linted with lintian. The .deb files,
# .buildinfo and .changes land in OUT.
#
# Why dpkg-buildpackage with debian/ rather than CPack's DEB generator:
# debhelper gives what a Debian package is expected to have and CPack does
# not: shlibs-derived Depends, the systemd unit and sysusers/tmpfiles
# maintainer-script snippets, compressed man pages and changelog, conffiles
# for /etc/jwt-signer, a -dev split, a build in a clean tree from the
# declared Build-Depends, and a result lintian accepts.
set -euo pipefail

out="${1:?usage: build-deb.sh OUT}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
for tool in dpkg-buildpackage dh lintian; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found: apt-get install dpkg-dev debhelper lintian" >&2
        exit 1
    }
done
# (OUT/rootfs, make deb-check's fresh Debian 12, is kept between runs.)
rm -rf "$out/src" "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out/build.log"
mkdir -p "$out/src"
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -C "$out/src" -xf -
cd "$out/src"
# The integration tests are not run (debian/rules): the unit and fuzz tests are.
DEB_BUILD_OPTIONS="parallel=$(nproc)" dpkg-buildpackage -us -uc -b >../build.log 2>&1 || {
    tail -n 40 ../build.log >&2
    echo "build-deb: dpkg-buildpackage failed (full log: $out/build.log)" >&2
    exit 1
}
cd ..
# lintian: no errors allowed; warnings are printed for the reader.
lintian --fail-on error ./*.changes
debs=(./*.deb)
echo "build-deb: OK: ${debs[*]}"
