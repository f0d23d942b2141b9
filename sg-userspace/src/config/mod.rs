//! Configuration file (SPEC 3).
