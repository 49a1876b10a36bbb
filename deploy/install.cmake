# install.cmake - the install-time half of `cmake --install` (CMakeLists.txt
# runs it with install(SCRIPT)). The paths inside the unit, the example
# configuration and the pkg-config file are worked out here, from the prefix
# given at install time (`cmake --install B --prefix P` or the configured
# CMAKE_INSTALL_PREFIX), so they name where the files really land; DESTDIR
# only moves the whole tree.
#
# Configuration files in etc/jwt-signer are installed only when absent: a
# re-install never overwrites an operator's edits (it says so instead).
# Set by CMakeLists.txt: JS_SOURCE_DIR JS_BINARY_DIR JS_VERSION JS_LIBDIR_REL
# JS_SOFTHSM_MODULE.

set(JS_PREFIX "${CMAKE_INSTALL_PREFIX}")
# GNUInstallDirs' rule: /usr puts configuration in /etc, any other prefix
# in PREFIX/etc.
if(JS_PREFIX STREQUAL "/usr")
  set(JS_SYSCONFDIR "/etc")
else()
  set(JS_SYSCONFDIR "${JS_PREFIX}/etc")
endif()
set(JS_CONFDIR "${JS_SYSCONFDIR}/jwt-signer")
set(JS_SBINDIR "${JS_PREFIX}/sbin")
set(JS_LIBDIR "${JS_PREFIX}/${JS_LIBDIR_REL}")
set(JS_INCLUDEDIR "${JS_PREFIX}/include")
# systemd's StateDirectory=/LogsDirectory= are always under /var, whatever
# the prefix.
set(JS_STATEDIR "/var/lib/jwt-signer")
set(JS_AUDITDIR "/var/log/jwt-signer/audit")

set(gen "${JS_BINARY_DIR}/install-gen")
file(MAKE_DIRECTORY "${gen}")
configure_file("${JS_SOURCE_DIR}/deploy/systemd/jwt-signerd.service.in" "${gen}/jwt-signerd.service" @ONLY)
configure_file("${JS_SOURCE_DIR}/client/jwtsigner-client.pc.in" "${gen}/jwtsigner-client.pc" @ONLY)
configure_file("${JS_SOURCE_DIR}/deploy/etc/signer.yaml.in" "${gen}/signer.yaml" @ONLY)
configure_file("${JS_SOURCE_DIR}/deploy/etc/softhsm2.conf.in" "${gen}/softhsm2.conf" @ONLY)

# Debian 12 keeps units in /lib/systemd/system (the same directory as
# /usr/lib/systemd/system on a merged /usr, and where lintian wants them).
if(JS_PREFIX STREQUAL "/usr")
  set(JS_UNITDIR "/lib/systemd/system")
else()
  set(JS_UNITDIR "${JS_PREFIX}/lib/systemd/system")
endif()
file(INSTALL "${gen}/jwt-signerd.service" DESTINATION "${JS_UNITDIR}")
file(INSTALL "${gen}/jwtsigner-client.pc" DESTINATION "${JS_LIBDIR}/pkgconfig")
file(INSTALL "${JS_SOURCE_DIR}/deploy/systemd/jwt-signer.sysusers" DESTINATION "${JS_PREFIX}/lib/sysusers.d"
     RENAME jwt-signer.conf)
file(INSTALL "${JS_SOURCE_DIR}/deploy/systemd/jwt-signer.tmpfiles" DESTINATION "${JS_PREFIX}/lib/tmpfiles.d"
     RENAME jwt-signer.conf)

# The examples, always current, next to the documentation.
set(examples "${JS_PREFIX}/share/doc/jwt-signer/examples")
file(INSTALL "${gen}/signer.yaml" "${gen}/softhsm2.conf" "${JS_SOURCE_DIR}/policy/examples/policy.yaml"
     DESTINATION "${examples}")

# The live configuration: written once.
foreach(pair "signer.yaml;${gen}/signer.yaml" "softhsm2.conf;${gen}/softhsm2.conf"
             "policy.yaml;${JS_SOURCE_DIR}/deploy/etc/policy.yaml")
  list(GET pair 0 name)
  list(GET pair 1 from)
  if(EXISTS "$ENV{DESTDIR}${JS_CONFDIR}/${name}")
    message(STATUS "Keeping: $ENV{DESTDIR}${JS_CONFDIR}/${name} (exists; the current example is in ${examples})")
  else()
    file(INSTALL "${from}" DESTINATION "${JS_CONFDIR}")
  endif()
endforeach()
