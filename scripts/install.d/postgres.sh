#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the store tests
# (tests/store_*.rs): user `postgres`, trust authentication from loopback only.
# Idempotent: does nothing when a server already answers. Debian's registry only.
set -euo pipefail

ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; }
wait_ready() {
  for _ in $(seq 1 60); do ready && return 0; sleep 0.5; done
  echo "postgres.sh: PostgreSQL did not become ready on 127.0.0.1:5432" >&2
  return 1
}

if ready; then
  echo "postgres.sh: PostgreSQL already answers on 127.0.0.1:5432"
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends postgresql
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
bin=/usr/lib/postgresql/$ver/bin

if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d "/etc/postgresql/$ver/main" ]; then
  # Debian's cluster: trust loopback connections (test machine only), then start it without
  # systemd (CI containers have none).
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if ! grep -q '^# dmpushd-tests' "$hba"; then
    tmp=$(mktemp)
    { echo '# dmpushd-tests: trust loopback for the store test suite'
      echo 'host all all 127.0.0.1/32 trust'
      echo 'host all all ::1/128 trust'
      cat "$hba"; } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
  fi
  sed -i "s/^#\?port = .*/port = 5432/" "/etc/postgresql/$ver/main/postgresql.conf"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
else
  # No Debian cluster: a private one, owned by the postgres user.
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
  data=/var/tmp/dmpushd-pg
  install -d -o postgres -m 0700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    su postgres -s /bin/sh -c "$bin/initdb -D $data -U postgres --auth=trust" >/dev/null
  fi
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -l $data/server.log \
    -o '-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=/tmp' start"
fi
wait_ready
echo "postgres.sh: PostgreSQL $ver ready on 127.0.0.1:5432"
