//! loom models live in `tests/`; build them with `--cfg zbmd_loom` (`make loom`).
