//! AWS EC2 provider (being built).
