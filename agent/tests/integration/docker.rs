//! Docker containerizer tests (filled in below).
