//! The standard listeners of daimon.
