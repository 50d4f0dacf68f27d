#!/bin/sh
# make-certs.sh: a throw-away CA plus server and client certificates for the TLS tests.
# Usage: make-certs.sh DIR SERVER-IP [CLIENT-CN]
#   DIR gets ca-cert.pem, ca-key.pem, server-cert.pem, server-key.pem (CN=localhost,
#   SAN localhost, 127.0.0.1 and SERVER-IP), client-cert.pem, client-key.pem (CN=CLIENT-CN).
set -eu
dir=$1 ip=$2 client=${3:-blkmig-client}
mkdir -p "$dir"
cd "$dir"
days=2
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca-cert.pem -days $days \
    -subj "/CN=blkmig test CA" 2>/dev/null
issue() {   # issue NAME SUBJECT EXTENSIONS
    openssl req -newkey rsa:2048 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
        -out "$1-cert.pem" -days $days -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
issue server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:$ip
extendedKeyUsage=serverAuth
keyUsage=digitalSignature,keyEncipherment"
issue client "/O=blkmig/CN=$client" "extendedKeyUsage=clientAuth
keyUsage=digitalSignature,keyEncipherment"
chmod 0600 ./*-key.pem
