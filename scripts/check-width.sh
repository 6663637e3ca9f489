#!/usr/bin/env bash
# Lines of Rust over 100 columns, the width rustfmt formats to. rustfmt leaves an expression as
# it is when a string in it is too long to fit, and says nothing; this says where. Tables in doc
# comments (`//! | ...`) may be wider: a table row cannot be wrapped.
#
#   scripts/check-width.sh          every .rs file git knows of; exits 1 naming each long line
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files -z -- '*.rs' | xargs -0 awk '
  length($0) > 100 && $0 !~ /^[[:space:]]*\/\/[\/!][[:space:]]*\|/ {
    printf "%s:%d: %d columns\n", FILENAME, FNR, length($0); long++
  }
  END {
    if (long) { printf "%d lines over 100 columns: split them (strings with a \\ continuation)\n", long; exit 1 }
  }'
