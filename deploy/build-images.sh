#!/usr/bin/env bash
# Builds the two images deploy/docker-compose.yml runs, from files on this machine only (no image
# registry is needed: both start FROM scratch):
#   agora:local            the agora binary, the shared libraries it loads (its ldd closure and the
#                          dynamic loader, at their own paths), Debian's static busybox as /bin/sh and
#                          the usual tools (native command tasks run under /bin/sh), util-linux's
#                          setpriv (tasks run as their user), /etc/passwd and /etc/group with root
#                          and nobody, /tmp.
#   agora-zookeeper:local  Debian's ZooKeeper jars (zookeeper.jar and its manifest's Class-Path,
#                          followed transitively) and the host's JRE with its ldd closure, started as
#                          a standalone QuorumPeerMain on /conf/zoo.cfg.
#
# Usage: deploy/build-images.sh [PATH_TO_AGORA_BINARY]   (default: target/release/agora)
# Needs: a running Docker engine, ldd, busybox-static (/bin/busybox), Debian's zookeeper package and
# a JRE (java on PATH), python3 (reads jar manifests).
set -euo pipefail

DEPLOY=$(cd "$(dirname "$0")" && pwd)
BIN=${1:-$DEPLOY/../target/release/agora}
AGORA_IMAGE=${AGORA_IMAGE:-agora:local}
ZK_IMAGE=${AGORA_ZK_IMAGE:-agora-zookeeper:local}

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ -x "$BIN" ] || die "no agora binary at $BIN (build it: cargo build --release, or pass its path)"
[ -x /bin/busybox ] || die "no /bin/busybox: apt-get install busybox-static"
[ -f /usr/share/java/zookeeper.jar ] || die "no /usr/share/java/zookeeper.jar: apt-get install zookeeper"
command -v java >/dev/null || die "no java on PATH: apt-get install default-jre-headless"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running?)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Copies each file to the same path under $1 (following symlinks, so the image holds real files).
copy_keep_path() {
  local root=$1; shift
  local f
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
  done
}

# The shared libraries (absolute paths) that the given ELF files load, the dynamic loader included.
# Libraries ldd cannot find are left out: they belong to optional parts (a JRE's GUI libraries
# reference libjvm.so, which the JVM has already loaded by path when it loads them).
ldd_closure() {
  local f
  for f in "$@"; do
    ldd "$f" 2>/dev/null | awk '
      $2 == "=>" && $3 ~ /^\// { print $3 }
      $1 ~ /^\// { print $1 }'
  done | sort -u
}

# A root filesystem with busybox as /bin/sh and its applets, users root and nobody, and /tmp.
base_rootfs() {
  local root=$1
  mkdir -p "$root"/{bin,etc,tmp,root,var/lib}
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
  done
  # Tasks run as nobody unless the agent allows root, so both must exist.
  cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat > "$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
  # glibc reads this for name lookups (compose service names resolve through Docker's DNS).
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$root/etc/nsswitch.conf"
}

build() {
  local tag=$1 ctx=$2
  log "docker build -t $tag ($(du -sh "$ctx" | cut -f1) context)"
  # The classic builder: it needs no buildx plugin and no registry for FROM scratch. Its output
  # (and the client's notice that it is deprecated) is shown only when the build fails.
  local out
  out=$(DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" 2>&1) || die "docker build -t $tag failed:
$out"
}

# ---- agora:local ----
ctx=$WORK/agora
root=$ctx/rootfs
base_rootfs "$root"
mkdir -p "$root/usr/local/bin" "$root/var/lib/agora"
cp -L "$BIN" "$root/usr/local/bin/agora"
# The agent starts tasks as their user (nobody by default) through util-linux's setpriv
# (--reuid/--regid/--groups, which busybox's applet lacks): the host's, at /usr/bin/setpriv.
SETPRIV=$(command -v setpriv || true)
[ -n "$SETPRIV" ] || die "no setpriv on this machine (util-linux): agents could not drop root for tasks"
rm -f "$root/bin/setpriv"
mkdir -p "$root/usr/bin"
cp -L "$SETPRIV" "$root/usr/bin/setpriv"
# shellcheck disable=SC2046
copy_keep_path "$root" $(ldd_closure "$BIN" "$SETPRIV")
cp "$DEPLOY/agora.Dockerfile" "$ctx/Dockerfile"
build "$AGORA_IMAGE" "$ctx"

# ---- agora-zookeeper:local ----
ctx=$WORK/zookeeper
root=$ctx/rootfs
base_rootfs "$root"
JAVA_BIN=$(readlink -f "$(command -v java)")
JAVA_HOME=$(dirname "$(dirname "$JAVA_BIN")")
[ -x "$JAVA_HOME/bin/java" ] || die "cannot find JAVA_HOME from $JAVA_BIN"
# The runtime only: no jmods, headers, manuals or sources (and no dangling links, such as a
# src.zip whose package is not installed).
excludes=("--exclude=${JAVA_HOME#/}/jmods" "--exclude=${JAVA_HOME#/}/include"
  "--exclude=${JAVA_HOME#/}/man" "--exclude=${JAVA_HOME#/}/demo" "--exclude=${JAVA_HOME#/}/lib/ct.sym")
while IFS= read -r dangling; do excludes+=("--exclude=${dangling#/}"); done \
  < <(find "$JAVA_HOME" -xtype l)
tar -C / --dereference "${excludes[@]}" -cf - "${JAVA_HOME#/}" | tar -C "$root" -xf -
ln -s "$JAVA_HOME/bin/java" "$root/bin/java"
# shellcheck disable=SC2046
copy_keep_path "$root" $(ldd_closure "$JAVA_HOME/bin/java" $(find "$JAVA_HOME/lib" -name '*.so'))
# zookeeper.jar names its dependencies in its manifest's Class-Path (absolute paths under
# /usr/share/java); follow them transitively so the classpath is exactly what ZooKeeper needs.
jars=$(python3 - /usr/share/java/zookeeper.jar <<'PY'
import os, sys, zipfile
todo, seen = list(sys.argv[1:]), []
while todo:
    jar = todo.pop()
    if jar in seen or not os.path.exists(jar):
        continue
    seen.append(jar)
    try:
        manifest = zipfile.ZipFile(jar).read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile):
        continue
    # Manifest lines are folded at 72 bytes: a continuation line starts with one space.
    text = manifest.replace("\r\n", "\n").replace("\n ", "")
    for line in text.split("\n"):
        if line.startswith("Class-Path:"):
            for entry in line[len("Class-Path:"):].split():
                path = entry if entry.startswith("/") else os.path.join(os.path.dirname(jar), entry)
                todo.append(os.path.normpath(path))
print("\n".join(seen))
PY
)
# slf4j-simple, when installed, makes ZooKeeper log to stderr (docker logs); without a binding
# it runs silently.
[ -f /usr/share/java/slf4j-simple.jar ] && jars="$jars"$'\n'/usr/share/java/slf4j-simple.jar
# shellcheck disable=SC2086
copy_keep_path "$root" $jars
classpath=$(printf '%s\n' $jars | paste -sd: -)
mkdir -p "$root/conf" "$root/data"
cp "$DEPLOY/zoo.cfg" "$root/conf/zoo.cfg"
sed "s|@CLASSPATH@|$classpath|" "$DEPLOY/zookeeper.Dockerfile" > "$ctx/Dockerfile"
build "$ZK_IMAGE" "$ctx"

# Both images must start: a missing library shows up here rather than in a compose log.
docker run --rm --entrypoint /usr/local/bin/agora "$AGORA_IMAGE" version >/dev/null \
  || die "$AGORA_IMAGE does not run"
docker run --rm --entrypoint /bin/sh "$AGORA_IMAGE" \
  -c '/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups -- id -u | grep -qx 65534' \
  || die "$AGORA_IMAGE cannot run a command as nobody (shell, setpriv or /etc/passwd missing)"
docker run --rm --entrypoint /bin/java "$ZK_IMAGE" -version >/dev/null 2>&1 \
  || die "$ZK_IMAGE: java does not run"
log "built $AGORA_IMAGE and $ZK_IMAGE"
