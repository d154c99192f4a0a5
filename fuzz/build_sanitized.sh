#!/usr/bin/env bash
# What a long fuzzing campaign with sanitizers needs (docs/fuzzing.md says how to run it):
#   .venv-fuzz/       a venv with veloxy and atheris built from source by clang, which gives
#                     atheris's asan_with_fuzzer.so (ASan and UBSan runtimes with libFuzzer in)
#   build/fuzz/       the C fast lanes (h1/_fastpath.c, http2/_hpack.c) built by clang with
#                     -fsanitize=fuzzer-no-link,address,undefined (coverage for libFuzzer,
#                     every memory access and undefined behaviour checked)
# Needs clang and its runtimes: apt-get install clang libclang-rt-14-dev (Debian 12).
# The plain build (setup.py, gcc) and .venv are left alone: the test suite keeps using them.
set -euo pipefail
cd "$(dirname "$0")/.."
CC=${CC:-clang}
PYTHON=${PYTHON:-python3}
command -v "$CC" >/dev/null || { echo "no $CC: apt-get install clang libclang-rt-14-dev" >&2; exit 1; }
[ -x .venv-fuzz/bin/python ] || "$PYTHON" -m venv .venv-fuzz
.venv-fuzz/bin/pip install -q -e '.[test]'
.venv-fuzz/bin/python -c "import atheris, os, sys; sys.exit(not os.path.exists(os.path.join(atheris.path(), 'asan_with_fuzzer.so')))" 2>/dev/null \
  || CLANG_BIN=$(command -v "$CC") .venv-fuzz/bin/pip install -q --force-reinstall --no-binary atheris atheris
include=$(.venv-fuzz/bin/python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
suffix=$(.venv-fuzz/bin/python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
mkdir -p build/fuzz
"$CC" -shared -fPIC -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
  -I"$include" src/veloxy/h1/_fastpath.c -o "build/fuzz/_fastpath$suffix"
echo "built build/fuzz/_fastpath$suffix"
"$CC" -shared -fPIC -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
  -I"$include" src/veloxy/http2/_hpack.c -o "build/fuzz/_hpack$suffix"
echo "built build/fuzz/_hpack$suffix (VELOXY_HPACK_SO, fuzz/hpack_differential.py)"
echo "LD_PRELOAD=$(.venv-fuzz/bin/python -c "import atheris, os; print(os.path.join(atheris.path(), 'asan_with_fuzzer.so'))")"
