#!/usr/bin/env bash
# Wheels the GPU machine lacks for `streamer bench pipeline` under Keras' JAX backend, into .whl/
# (ignored through .git/info/exclude; about 6 MB). That machine has Python 3.12, JAX, numpy, scipy,
# PyYAML, h5py, absl-py and ml-dtypes, and no TensorFlow and no network; this list was checked by
# running the command in benchmarks/gpu/README.md in a fresh venv holding only those plus these.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for package in keras namex optree msgspec aiokafka async-timeout rich markdown-it-py mdurl pygments \
               prometheus-client threadpoolctl; do
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$package"
done
ls .whl
