//! Recovery tests (filled in below).
