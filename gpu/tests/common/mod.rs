//! Helpers shared by the backend integration tests.

pub mod conformance;
