//! Compatibility surfaces: each parses its own wire format, calls the same services as the native
//! handlers, and renders its own wire format. They own no tables and no rules.

pub mod midpilot;
pub mod recoupable;
pub mod trigger;
