#!/usr/bin/env bash
# Builds the Go example into OUT_DIR (default examples/go/bin) with Go and the
# gRPC/protobuf libraries from Debian packages, offline:
#   apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev \
#     golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc \
#     protobuf-compiler libprotobuf-dev
# (grpc-go's codec needs github.com/golang/protobuf 1.4 or later, which wraps
# the APIv2 runtime the stubs use; Debian bookworm's default is 1.3.)
# The stubs are generated from protos/switchyard/v1 into a temporary GOPATH
# (their go_package is switchyard/v1), next to this folder's main.go, and built
# in GOPATH mode against /usr/share/gocode (no Go module proxy needed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$(mkdir -p "${1:-$here/bin}" && cd "${1:-$here/bin}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

includes=(-I "$root/protos")
# The well-known types (google/protobuf/duration.proto, ...) from libprotobuf-dev.
[ -f /usr/include/google/protobuf/duration.proto ] && includes+=(-I /usr/include)
mkdir -p "$work/src"
protoc "${includes[@]}" --go_out="$work/src" --go-grpc_out="$work/src" "$root"/protos/switchyard/v1/*.proto
mkdir -p "$work/src/switchyard-example"
cp "$here/main.go" "$work/src/switchyard-example/"
cd "$work/src/switchyard-example"
GOPATH="$work:/usr/share/gocode" GO111MODULE=off GOFLAGS= go build -o "$out/switchyard-example" .
echo "built $out/switchyard-example"
