//! The one retry policy (being written).
