# Sourced by scripts/install.sh and scripts/ensure-services.sh: installs Debian/Ubuntu packages
# the project needs when they are missing, as root or through sudo.

# apt_install WHAT PACKAGE...: installs PACKAGE... with apt-get; WHAT says what fails without
# them. Returns non-zero (and says why on stderr) when they could not be installed.
apt_install() {
  local what=$1; shift
  local sudo="" caller
  caller=$(basename "${BASH_SOURCE[1]:-$0}")
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null || { [ -n "$sudo" ] && ! command -v sudo >/dev/null; }; then
    echo "$caller: apt-get (as root or with sudo) is not available: install $* ($what)" >&2
    return 1
  fi
  echo "$caller: installing $* (Debian packages)" >&2
  if ! { $sudo apt-get update -q >/dev/null &&
         DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" \
           >/dev/null; }; then
    echo "$caller: could not install $*; $what" >&2
    return 1
  fi
}
