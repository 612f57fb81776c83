#!/bin/sh
# The image's file layout: the service user and the only places it may write.
#   deploy/image-layout.sh ROOT        (the Dockerfile runs it with ROOT=/)
# The tests run it with a temporary ROOT and check the result
# (tests/unit/test_image_layout.py), so the tree the image builds is the tree tested.
#
#   /app                  the code, root-owned, read-only to the service (working directory)
#   /var/lib/streamrec    Faust's data directory (STREAMREC_DATA_DIR), the service's
#   /bundles              the bundle volume (STREAMREC_BUNDLE_PATH under it, the store in
#   /bundles/store        STREAMREC_BUNDLE_STORE), the service's: the trainer writes here
set -eu
ROOT=${1:?usage: image-layout.sh ROOT}
UID_=${STREAMREC_UID:-10001}
if [ "$ROOT" = "/" ] && ! id streamrec >/dev/null 2>&1; then
  useradd --create-home --uid "$UID_" streamrec
fi
mkdir -p "$ROOT/app" "$ROOT/var/lib/streamrec" "$ROOT/bundles/store"
chown "$UID_:$UID_" "$ROOT/var/lib/streamrec" "$ROOT/bundles" "$ROOT/bundles/store"
chmod 0755 "$ROOT/app" "$ROOT/var/lib/streamrec" "$ROOT/bundles" "$ROOT/bundles/store"
