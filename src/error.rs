//! The one rule that turns an error into an exit code: 2 for a problem the user can fix
//! (the message says what, where and how), 1 for an internal failure.

/// An error that knows whether its user can fix it.
pub trait UserFixable: std::error::Error {
    /// Whether the user can fix this (a file, a setting, a flag) rather than an internal
    /// failure.
    fn is_user_error(&self) -> bool;

    /// The process exit code for this error: 2 if the user can fix it, else 1.
    fn exit_code(&self) -> u8 {
        if self.is_user_error() { 2 } else { 1 }
    }
}
