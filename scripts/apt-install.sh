# Sourced by the install-*-deps.sh scripts: apt_install_missing LABEL PACKAGE... installs the Debian packages
# given (nothing when none), as root; otherwise it says what to install and fails.
apt_install_missing() {
  local label="$1"
  shift
  [ "$#" -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$label: missing $*; run as root or: sudo apt-get install $*" >&2
    return 1
  fi
  echo "$label: apt-get install $*" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
