//! The built-in offline model (being written).
