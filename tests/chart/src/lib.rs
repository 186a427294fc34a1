//! Placeholder while the chart helpers are written.
