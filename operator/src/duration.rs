//! Go-style duration strings (`30s`, `15m`, `720h`).
