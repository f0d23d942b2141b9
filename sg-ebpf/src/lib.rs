#![no_std]
// The programs live in the `sg` binary target; this library target exists
// so that cargo can resolve the crate as a build dependency.
