#!/usr/bin/env bash
# The long fuzzing run: every door of an in-process server (native, generic, streaming, Open Inference Protocol,
# gRPC's health and reflection, HTTP) takes thousands of generated requests per test (hypothesis profile "long",
# see tests/support/fuzzing.py), then prints how many examples each door tried and what they hit.
#
#   scripts/reliability/fuzz_long.sh                 # a fresh random seed (printed; failures name it too)
#   FUZZ_SEED=1234 scripts/reliability/fuzz_long.sh  # the same draws again
#   scripts/reliability/fuzz_long.sh -k http         # extra arguments go to pytest (here: the HTTP door only)
#
# Run from anywhere; uses the checkout's .venv when there is one. CI runs the same file with the fast "ci" profile.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
export HYPOTHESIS_PROFILE=long
export FUZZ_SEED="${FUZZ_SEED:-$(python -c 'import random; print(random.SystemRandom().randrange(2**32))')}"
echo "fuzzing every door with the long profile, FUZZ_SEED=${FUZZ_SEED}"
exec python -m pytest -q -p no:randomly --hypothesis-show-statistics tests/server/test_fuzz.py "$@"
